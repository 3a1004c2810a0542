"""Timing the trainer as :func:`sie3d.generate.generate` builds it (``sie3d bench generate``)."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace


def synchronize(device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """The timed iterations of one setting: the trainer's step records, and their wall-clock time
    (the device synchronised before and after, so asynchronous CUDA work is counted)."""

    records: list[dict[str, float]]
    wall_seconds: float

    @property
    def wall_per_iteration(self) -> float:
        return self.wall_seconds / len(self.records)


def time_iterations(config, device, iterations: int = 10, warmup: int = 2, photo=None, prior=None,
                    identity_dim: int | None = None) -> Timing:
    """Build the trainer as :func:`sie3d.generate.generate` does and time ``iterations`` steps after ``warmup``.

    Args:
        config: resolved config; ``train.iterations`` is raised to ``warmup + iterations`` if smaller.
        device: torch device of the run.
        photo: path or uint8 array (default: ``skimage.data.astronaut()``).
        prior: a :class:`sie3d.diffusion.prior.DiffusionPrior` to use instead of the one the config names.
        identity_dim: replace the photo's identity vector with a seeded random unit vector of this size
            (the paper prior's 512-d ArcFace input when no ArcFace model is here; timing only).
    """
    import numpy as np
    import skimage.data

    from ..subject import initial_avatar, make_subject, prepare_subject
    from ..train.trainer import AvatarTrainer

    if iterations < 1 or warmup < 0:
        raise ValueError(f"need --iterations >= 1 and --warmup >= 0, got {iterations} and {warmup}")
    total = warmup + iterations
    if config.train.iterations < total:
        config = replace(config, train=replace(config.train, iterations=total))
    photo = skimage.data.astronaut() if photo is None else photo
    subject = make_subject([photo], config.models, ["astronaut" if isinstance(photo, np.ndarray) else str(photo)])
    if identity_dim is not None:
        vector = np.random.default_rng(config.run.seed).standard_normal(identity_dim)
        subject = replace(subject, identity=(vector / np.linalg.norm(vector)).astype(np.float32))
    with tempfile.TemporaryDirectory(prefix="sie3d-bench-generate-") as run_dir:
        prepared = prepare_subject(subject, config, device)
        trainer = AvatarTrainer(config, prepared, initial_avatar(prepared, config, device), run_dir, device,
                                prior=prior, progress=False, log=lambda _: None)
        if warmup:
            trainer.fit(warmup)
        synchronize(device)
        start = time.perf_counter()
        records = trainer.fit(iterations)
        synchronize(device)
        return Timing(records, time.perf_counter() - start)
