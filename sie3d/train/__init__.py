"""The optimisation of one avatar: loss terms and their schedules, atomic checkpoints with RNG
capture, the ``metrics.jsonl`` log, and :class:`sie3d.train.trainer.AvatarTrainer`, which combines the
guidance, emotion, reference-view and regularisation losses over the mesh-bound Gaussians it is given
(painted by :func:`sie3d.subject.initial_avatar`).

May import the base modules, :mod:`sie3d.subject` and the stages below it (face, diffusion, render,
avatar); never generation, evaluation, the CLI or the book.
"""
