"""Atomic checkpoints of a training run (``run_dir/checkpoints/ckpt_NNNNNN.pt``) and RNG capture.

A checkpoint is a plain dict saved with ``torch.save`` through a temporary file and ``os.replace``,
so an interrupted write never leaves a half file behind that ``--resume`` would pick up.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..run_dir import CHECKPOINT_DIR

_NAME = re.compile(r"^ckpt_(\d{6,})\.pt$")


def checkpoint_path(run_dir: str | Path, iteration: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"ckpt_{iteration:06d}.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    # our own files: they hold numpy RNG state, so weights_only loading is not possible
    return torch.load(Path(path), map_location="cpu", weights_only=False)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


class NoUsableCheckpoint(ValueError):
    """Every checkpoint of a run failed to load (the message lists each file and why)."""


def load_newest_checkpoint(run_dir: str | Path,
                           warn: Callable[[str], None] = print) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of a run that loads, as ``(path, state)``; None when there is none.

    A file that does not load (truncated by a full disk, a crash outside ``save_checkpoint``...) is
    renamed to ``*.pt.corrupt`` (kept for inspection, no longer listed) and ``warn`` says which file
    was skipped and why; the next older one is tried.

    Raises:
        NoUsableCheckpoint: checkpoints exist but none loads.
    """
    skipped = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            state = load_checkpoint(path)
            if not isinstance(state, dict) or "iteration" not in state:
                raise ValueError("not a training checkpoint (no 'iteration')")
            return path, state
        except Exception as exc:  # torch.load raises many types for a damaged file
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
            path.rename(path.with_name(path.name + ".corrupt"))
            skipped.append(f"{path.name} ({reason})")
            warn(f"[checkpoint] skipped {path} ({reason}); kept as {path.name}.corrupt, trying the previous one")
    if skipped:
        raise NoUsableCheckpoint(f"no checkpoint of {run_dir} loads: {'; '.join(skipped)}; "
                                 "all were renamed *.corrupt, so resuming again starts the run over")
    return None


def prune_checkpoints(run_dir: str | Path, keep: int = 2) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)


def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Python, numpy and torch (global + ``generator``) RNG states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])
