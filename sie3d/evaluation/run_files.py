"""The run directory as evaluation reads it: file names, validation, and the input photos.

A finished ``sie3d generate`` run holds ``config.yaml``, ``manifest.json`` (optional ``"ablation"`` key
that groups runs), ``summary.json`` (a :class:`~sie3d.run_dir.Summary`; its ``photos``: input photo
paths, absolute or relative to the run), ``frontal.png`` and ``views/*.png`` (or ``renders/*.png``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError, config_from_dict, read_params_file
from ..run_dir import CONFIG_FILE, FRONTAL_RENDER, MANIFEST_FILE, SUMMARY_FILE, Summary, read_summary

GROUP_KEY = "ablation"  # in manifest.json; default: the run's parent directory name
VIEW_DIRS = ("views", "renders")  # the first that exists holds the other renders
RENDER_GLOB = "*.png"
MIN_RENDER_SIDE = 16
SMALL_IMAGE_SIDE = 128  # below this, dlib's HOG detector runs on a 4x upsampled image (faces ~25 px wide)

REFERENCE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")



class RunLayoutError(FileNotFoundError):
    """A run directory lacks a file evaluation needs (names the file and who writes it)."""


@dataclass
class RunFiles:
    """The files of one run directory, validated."""

    run_dir: Path
    name: str
    group: str
    config: Config
    photos: list[Path]
    frontal: Path
    views: list[Path]
    summary: Summary = field(default_factory=Summary)
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def renders(self) -> list[Path]:
        """Frontal render first, then the other views (sorted by name)."""
        return [self.frontal, *self.views]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise RunLayoutError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RunLayoutError(f"{path} must hold a JSON object")
    return data


def _resolve_photo(entry: str, run_dir: Path) -> Path:
    path = Path(entry).expanduser()
    candidates = [path] if path.is_absolute() else [run_dir / path, Path.cwd() / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise RunLayoutError(f"input photo {entry!r} listed in {run_dir / SUMMARY_FILE} was not found "
                         f"(looked at {', '.join(str(c) for c in candidates)}); fix the path or move the photo back")


def read_run(run_dir: str | Path) -> RunFiles:
    """Validate a run directory and list its files (see the module docstring for the layout).

    Raises:
        RunLayoutError: a required file is missing or malformed.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunLayoutError(f"run directory not found: {run_dir}")
    for required, writer in ((CONFIG_FILE, "the trainer (save_config)"), (SUMMARY_FILE, "the trainer"),
                             (FRONTAL_RENDER, "the trainer's final renders")):
        if not (run_dir / required).is_file():
            raise RunLayoutError(f"{run_dir} has no {required} (written by {writer}); is it a finished "
                                 f"`sie3d generate` run directory?")
    try:
        config = config_from_dict(read_params_file(run_dir / CONFIG_FILE))
    except ConfigError as exc:
        raise RunLayoutError(f"{run_dir / CONFIG_FILE}: {exc}") from None
    try:
        summary = read_summary(run_dir)
    except ValueError as exc:
        raise RunLayoutError(f"{run_dir / SUMMARY_FILE} is not a valid summary ({exc})") from None
    manifest = _read_json(run_dir / MANIFEST_FILE) if (run_dir / MANIFEST_FILE).is_file() else {}
    entries = summary.photos
    if not entries or not all(isinstance(e, str) for e in entries):
        raise RunLayoutError(f"{run_dir / SUMMARY_FILE} must list the input photo paths under \"photos\"")
    photos = [_resolve_photo(entry, run_dir) for entry in entries]
    view_dir = next((run_dir / d for d in VIEW_DIRS if (run_dir / d).is_dir()), None)
    views = sorted(view_dir.glob(RENDER_GLOB)) if view_dir is not None else []
    group = str(manifest.get(GROUP_KEY) or run_dir.resolve().parent.name)
    return RunFiles(run_dir=run_dir, name=run_dir.name, group=group, config=config, photos=photos,
                    frontal=run_dir / FRONTAL_RENDER, views=views, summary=summary, manifest=manifest)


def reference_images(directory: str | Path) -> list[Path]:
    """Image files (``REFERENCE_SUFFIXES``) directly inside ``directory``, sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"reference directory not found: {directory}")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in REFERENCE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"{directory} holds no images ({', '.join(REFERENCE_SUFFIXES)})")
    return files
