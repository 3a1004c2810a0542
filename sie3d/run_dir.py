"""The run directory: its file names, its status, whether it can be reused for a config, its config.

One ``sie3d generate`` run writes (names below; nothing else in the package spells them)::

    config.yaml           the resolved config (CONFIG_FILE)
    manifest.json         seed, params hash, versions, git revision, device, status (MANIFEST_FILE)
    inputs/photo_K.png    the photos as read (INPUTS_DIR)
    metrics.jsonl         one line per logged iteration (METRICS_LOG)
    checkpoints/          resumable state (CHECKPOINT_DIR)
    avatar.ply, avatar.spz, avatar.rig (posable: sie3d.avatar.rig), frontal.png, frontal_photo_expression.png, views/, views.png,
    turntable.mp4, turntable.gif
    summary.json          what the run measured of itself (SUMMARY_FILE)
    metrics.json          written by ``sie3d evaluate`` (EVALUATION_METRICS)

A run is *finished* when its manifest says so and ``summary.json`` exists (:func:`run_status`). A
directory can be reused for a config when it is empty, interrupted (resume) or finished with the same
params hash (:func:`reuse_for`); finished with another hash it is *stale*. ``summary.json`` is a
:class:`Summary` (:func:`read_summary`, :func:`write_summary`).
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .config import Config, ConfigError, config_from_dict, read_params_file, save_config
from .runtime import git_revision, now_utc as _now, package_versions, write_json_atomic

if TYPE_CHECKING:
    import torch

CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "manifest.json"
SUMMARY_FILE = "summary.json"
INPUTS_DIR = "inputs"
METRICS_LOG = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
AVATAR_PLY = "avatar.ply"
AVATAR_SPZ = "avatar.spz"
AVATAR_RIG = "avatar.rig"
FRONTAL_RENDER = "frontal.png"
FRONTAL_PHOTO_EXPRESSION = "frontal_photo_expression.png"
VIEWS_DIR = "views"
VIEW_GRID = "views.png"
TURNTABLE_MP4 = "turntable.mp4"
TURNTABLE_GIF = "turntable.gif"
EVALUATION_METRICS = "metrics.json"
LOCK_FILE = ".lock"

Status = Literal["absent", "running", "interrupted", "failed", "finished"]
Reuse = Literal["new", "resume", "done"]


class StaleRunError(RuntimeError):
    """A finished run directory was made with other params than the ones asked for now."""


def input_photo_path(run_dir: str | Path, index: int) -> Path:
    return Path(run_dir) / INPUTS_DIR / f"photo_{index}.png"


def view_path(run_dir: str | Path, index: int) -> Path:
    return Path(run_dir) / VIEWS_DIR / f"view_{index:03d}.png"


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """A run directory's ``manifest.json`` (``status``, ``params_hash``, ...); ``{}`` when absent or unreadable."""
    try:
        manifest = json.loads((Path(run_dir) / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def read_config(run_dir: str | Path) -> Config:
    """The resolved config a run was made with (its ``config.yaml``).

    Raises:
        FileNotFoundError: no ``config.yaml`` (not a run directory).
        ConfigError: the file does not hold a valid config (message names the file).
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {CONFIG_FILE}: not a `sie3d generate` run directory")
    try:
        return config_from_dict(read_params_file(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def has_checkpoints(run_dir: str | Path) -> bool:
    folder = Path(run_dir) / CHECKPOINT_DIR
    return folder.is_dir() and any(folder.iterdir())


def run_status(run_dir: str | Path) -> Status:
    """``absent`` (no manifest), ``finished`` (manifest says so and ``summary.json`` exists), else the
    manifest's word: ``running`` (or killed without a word), ``interrupted``, ``failed``."""
    manifest = read_manifest(run_dir)
    status = manifest.get("status")
    if not manifest:
        return "absent"
    if status == "finished":
        return "finished" if (Path(run_dir) / SUMMARY_FILE).is_file() else "interrupted"
    return status if status in ("interrupted", "failed") else "running"


def is_finished(run_dir: str | Path) -> bool:
    return run_status(run_dir) == "finished"


def reuse_for(run_dir: str | Path, config: Config) -> Reuse:
    """What to do with ``run_dir`` for ``config``: ``done`` (finished with the same params hash),
    ``resume`` (checkpoints of an unfinished run), ``new`` (nothing to keep).

    Raises:
        StaleRunError: finished with another params hash (message names both and the fix).
    """
    if is_finished(run_dir):
        recorded, wanted = read_manifest(run_dir).get("params_hash"), config.params_hash()
        if recorded != wanted:
            raise StaleRunError(f"{run_dir} is a finished run made with other params (hash {recorded}, asked "
                                f"for {wanted}); delete it or choose another output directory")
        return "done"
    return "resume" if has_checkpoints(run_dir) else "new"


@dataclass
class RunDir:
    """A run directory: resolved ``config.yaml`` and ``manifest.json`` written on creation."""

    path: Path
    config: Config
    manifest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, path: str | Path, config: Config, device: torch.device | str = "cpu",
               extra: dict[str, Any] | None = None) -> "RunDir":
        import torch

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_config(config, path / CONFIG_FILE)
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


# --------------------------------------------------------------------------- summary.json

@dataclass
class FaceReading:
    """What the face readout (:mod:`sie3d.face.readout`) measured of one image.

    Attributes:
        face_found: whether dlib found a face (None: not asked, the photo's face is given).
        dlib_distance, dlib_cosine: 128-d dlib descriptor distance / cosine to the photo's (None: not measured).
        landmarks: expression measures of the 68 landmarks, inter-ocular units
            (:func:`sie3d.face.landmarks.expression_measures`).
        emotions: classifier name -> {emotion class: probability}.
    """

    face_found: bool | None = None
    dlib_distance: float | None = None
    dlib_cosine: float | None = None
    landmarks: dict[str, float] | None = None
    emotions: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the fields that were measured, then ``emotion_<classifier>`` per classifier."""
        out = {name: value for name in ("face_found", "dlib_distance", "dlib_cosine", "landmarks")
               if (value := getattr(self, name)) is not None}
        out.update({f"emotion_{name}": probs for name, probs in self.emotions.items()})
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FaceReading":
        return cls(face_found=data.get("face_found"), dlib_distance=data.get("dlib_distance"),
                   dlib_cosine=data.get("dlib_cosine"), landmarks=data.get("landmarks"),
                   emotions={k[len("emotion_"):]: v for k, v in data.items() if k.startswith("emotion_")})


_READINGS = ("photo", "frontal", "frontal_photo_expression")


@dataclass
class Summary:
    """What a run measured of itself (``summary.json``); fields a run did not record keep their defaults.

    ``views``: per view ``{"azimuth": degrees, "dlib": bool, "yunet": best score or None}``;
    ``back_of_head``: ``{"colour": [3] in [0, 1], "to_hair": RGB distance (0-255), "to_skin": ...}``;
    ``expression_match``: how the CLI matched the request text to a class (None: not recorded).
    """

    photos: list[str] = field(default_factory=list)
    expression: str = ""
    expression_class: str | None = None
    intensity: float | None = None
    accessory: str = ""
    preset: str | None = None
    identity_encoder: str | None = None
    iterations: int = 0
    n_gaussians: int = 0
    expression_coefficients: dict[str, float] = field(default_factory=dict)
    final_losses: dict[str, float] = field(default_factory=dict)
    photo: FaceReading = field(default_factory=FaceReading)
    frontal: FaceReading = field(default_factory=FaceReading)
    photo_expression_coefficients: dict[str, float] = field(default_factory=dict)
    frontal_photo_expression: FaceReading = field(default_factory=FaceReading)
    views: list[dict[str, Any]] = field(default_factory=list)
    back_of_head: dict[str, Any] = field(default_factory=dict)
    classifiers_missing: dict[str, str] = field(default_factory=dict)
    seconds_per_iteration: float | None = None
    wall_seconds: float | None = None
    peak_memory_mb: float | None = None
    nan_recoveries: int = 0
    expression_match: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, keys in field order (``expression_match`` only when recorded)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update({name: out[name].to_dict() for name in _READINGS})
        if self.expression_match is None:
            del out["expression_match"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Summary":
        """A summary from its JSON form; unknown keys are ignored, a single photo path becomes a list."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.update({name: FaceReading.from_dict(values[name]) for name in _READINGS if name in values})
        if isinstance(values.get("photos"), str):
            values["photos"] = [values["photos"]]
        return cls(**values)


def read_summary(run_dir: str | Path) -> Summary:
    """A run's ``summary.json``.

    Raises:
        FileNotFoundError: no ``summary.json``. ValueError: not a JSON object.
    """
    data = json.loads((Path(run_dir) / SUMMARY_FILE).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{Path(run_dir) / SUMMARY_FILE} must hold a JSON object")
    return Summary.from_dict(data)


def write_summary(run_dir: str | Path, summary: Summary) -> Path:
    """Write ``summary.json`` atomically; returns its path."""
    path = Path(run_dir) / SUMMARY_FILE
    write_json_atomic(path, summary.to_dict())
    return path


# --------------------------------------------------------------------------- one writer per run directory

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
