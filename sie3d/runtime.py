"""Seeding, device choice and run directories with ``config.yaml`` + ``manifest.json``."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import random
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config, save_config

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
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU. Asking for CUDA without one is an error."""
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


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON through a temporary file and ``os.replace`` so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str))
    os.replace(tmp, path)


@dataclass
class RunDir:
    """A run directory: resolved ``config.yaml`` and ``manifest.json`` written on creation."""

    path: Path
    config: Config
    manifest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, path: str | Path, config: Config, device: torch.device | str = "cpu",
               extra: dict[str, Any] | None = None) -> "RunDir":
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_config(config, path / "config.yaml")
        manifest = {
            "preset": config.preset,
            "seed": config.run.seed,
            "params_hash": config.params_hash(),
            "git_revision": git_revision(),
            "device": str(device),
            "device_name": (torch.cuda.get_device_name(torch.device(device))
                            if torch.device(device).type == "cuda" else platform.processor() or platform.machine()),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "packages": package_versions(),
            "started": _now(),
            "finished": None,
            "status": "running",
        }
        manifest.update(extra or {})
        run = cls(path=path, config=config, manifest=manifest)
        run.write_manifest()
        return run

    def write_manifest(self) -> None:
        write_json_atomic(self.path / "manifest.json", self.manifest)

    def finish(self, status: str = "finished", **extra: Any) -> None:
        self.manifest.update(extra)
        self.manifest["finished"] = _now()
        self.manifest["status"] = status
        self.write_manifest()
