"""The optimisation of one avatar: loss terms and their schedules, atomic checkpoints with RNG
capture, and :class:`sie3d.train.trainer.AvatarTrainer`, which combines the guidance, emotion,
reference-view and regularisation losses over mesh-bound Gaussians.

May import the base modules, :mod:`sie3d.subject` and the stages below it (face, diffusion, render,
avatar); never generation, evaluation, the CLI or the book.
"""
