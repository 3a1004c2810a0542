"""Seeding, device choice, package versions and git revision, atomic JSON writes, and the model cache a
long-lived worker keeps between runs. The run directory itself is :mod:`sie3d.run_dir`'s."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import random
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


#: packages whose versions every manifest records (missing ones are recorded as null)
TRACKED_PACKAGES = (
    "sie3d", "torch", "numpy", "diffusers", "transformers", "huggingface_hub", "gsplat",
    "dlib-bin", "opencv-python-headless", "h5py", "scikit-image", "papermill", "jupytext",
    "jupyter-book",
)


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed python, numpy and torch; on CPU, also ask torch for deterministic kernels.

    Returns a CPU ``torch.Generator`` seeded with ``seed`` for code that wants its own stream.
    """
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU. Asking for CUDA without one is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"run.device={name!r} but CUDA is not available here; use run.device=cpu or auto"
        )
    return device


def diffusion_dtype(device: torch.device, half_precision: bool) -> torch.dtype:
    """UNet dtype: fp16 only when asked for and on CUDA (CPU fp16 convs are slow or missing)."""
    import torch

    return torch.float16 if (half_precision and device.type == "cuda") else torch.float32


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision(path: str | Path | None = None) -> str | None:
    """``<sha>`` or ``<sha>-dirty`` of the repository holding ``path``; None outside git."""
    cwd = Path(path or Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def now_utc() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON through a temporary file and ``os.replace`` so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- models kept across runs


class ModelCache:
    """Models a long-lived process keeps between runs (a batch worker), keyed by what built them.

    ``get(key, build)`` returns the object built for ``key`` earlier in this process, else calls
    ``build()`` once and keeps it. Keys must name everything the model depends on (its config
    section, device, dtype). Only stateless-at-inference models belong here: nothing a run trains.
    """

    def __init__(self) -> None:
        self._items: dict[Any, Any] = {}
        self.builds: dict[Any, float] = {}  # key -> seconds its build took

    def get(self, key: Any, build: Any) -> Any:
        if key not in self._items:
            start = time.perf_counter()
            self._items[key] = build()
            self.builds[key] = time.perf_counter() - start
        return self._items[key]
