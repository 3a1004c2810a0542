"""Seeding, device choice, run directories with ``config.yaml`` + ``manifest.json``, the run-directory
lock (one writer per run) and the model cache a long-lived worker keeps between runs."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import random
import subprocess
import time
import warnings
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


MANIFEST_FILE = "manifest.json"


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """A run directory's ``manifest.json`` (``status``, ``params_hash``, ...); ``{}`` when absent or unreadable."""
    try:
        manifest = json.loads((Path(run_dir) / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


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
        write_json_atomic(self.path / MANIFEST_FILE, self.manifest)

    def finish(self, status: str = "finished", **extra: Any) -> None:
        self.manifest.update(extra)
        self.manifest["finished"] = _now()
        self.manifest["status"] = status
        self.write_manifest()


# --------------------------------------------------------------------------- one writer per run directory

LOCK_FILE = ".lock"


class RunDirLocked(FileExistsError):
    """Another live process holds the run directory's lock (the message names it)."""


def _process_start_time(pid: int) -> float | None:
    """Epoch seconds at which local process ``pid`` started (Linux ``/proc``); None when unknown."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _holder_alive(holder: dict[str, Any]) -> bool:
    """Whether the process that wrote a lock still runs (other hosts: assumed alive)."""
    if holder.get("host") != platform.node():
        return True
    pid = int(holder.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    started = _process_start_time(pid)  # a recycled pid started after the lock was written
    return started is None or started <= float(holder.get("time", float("inf"))) + 2.0


class RunLock:
    """Exclusive lock of a run directory: ``<run>/.lock`` holds the owner's pid, host and start time.

    Use as a context manager around everything that writes into the run. A lock whose process is gone
    (same host, pid not running or recycled) is taken over with a warning; a live holder, or one on
    another host, makes :meth:`acquire` raise :class:`RunDirLocked` naming it.
    """

    def __init__(self, run_dir: str | Path, warn: Any = None):
        self.path = Path(run_dir) / LOCK_FILE
        self.warn = warn or (lambda message: warnings.warn(message, stacklevel=3))
        self.held = False

    def read(self) -> dict[str, Any] | None:
        """The holder record, ``{}`` for an unreadable lock file, None when there is no lock."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "host": platform.node(), "started": _now(), "time": time.time()}
        tmp = self.path.with_name(f"{LOCK_FILE}.{platform.node()}.{os.getpid()}")
        tmp.write_text(json.dumps(record))
        try:
            for _ in range(2):
                try:
                    os.link(tmp, self.path)  # atomic and exclusive, with the content already in place
                    self.held = True
                    return self
                except FileExistsError:
                    holder = self.read()
                    if holder is None:
                        continue
                    if holder and _holder_alive(holder):
                        raise RunDirLocked(
                            f"{self.path.parent} is in use by pid {holder.get('pid')} on {holder.get('host')} "
                            f"(since {holder.get('started')}); wait for it to finish, or delete {self.path} "
                            "if that process is gone") from None
                    what = (f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}"
                            if holder else "unreadable")
                    self.warn(f"{self.path.parent}: taking over a stale lock ({what}): its process is not running")
                    self.path.unlink(missing_ok=True)
            raise RunDirLocked(f"{self.path.parent}: another process keeps taking the lock {self.path}")
        finally:
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            holder = self.read()
            if holder and holder.get("pid") == os.getpid() and holder.get("host") == platform.node():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


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
