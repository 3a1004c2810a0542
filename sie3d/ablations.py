"""The ablation grid: every ablation × identity × expression, generated and evaluated once.

An ablation is a small YAML delta merged onto a preset (``params/ablations/*.yaml``). Runs live at
``<out_root>/<ablation>/<identity>__<expression>/`` (the ablation directory name is what the
evaluation groups by). A run is *finished* when its ``manifest.json`` says ``"status": "finished"``
and its ``metrics.json`` exists; finished runs are skipped, so an interrupted grid resumes where it
stopped. A run whose generation finished but that was never evaluated is only evaluated.

Generation is injected (``generate_fn``) so that the grid logic does not depend on the trainer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, load_config

PARAMS_DIR = Path(__file__).resolve().parent.parent / "params"
ABLATIONS_DIR = PARAMS_DIR / "ablations"
MANIFEST_FILE = "manifest.json"  # written by sie3d.runtime.RunDir
METRICS_FILE = "metrics.json"  # written by sie3d.evaluate

#: (name, params delta or None for the full method, label); labels equal the paper's Table 2 rows
ABLATIONS: list[tuple[str, Path | None, str]] = [
    ("full", None, "full"),
    ("no_semantic_embedding", ABLATIONS_DIR / "no_semantic_embedding.yaml", "w/o semantic embedding"),
    ("no_emotion_loss", ABLATIONS_DIR / "no_emotion_loss.yaml", "w/o perceptual expression loss"),
    ("sds", ABLATIONS_DIR / "sds.yaml", "SDS instead of ISM"),
    ("released_code_conditioning", ABLATIONS_DIR / "released_code_conditioning.yaml",
     "released-code conditioning (Perp-Neg)"),
]

#: generate_fn(config, photo, run_dir, info): writes a run directory whose manifest ends "finished"
GenerateFn = Callable[[Config, Path, Path, dict[str, Any]], Any]
#: evaluate_fn(run_dir): writes run_dir/metrics.json
EvaluateFn = Callable[[Path], Any]


@dataclass(frozen=True)
class GridRun:
    """One cell of the grid and what happened to it (``skipped`` | ``evaluated`` | ``generated``)."""

    ablation: str
    label: str
    identity: str
    expression: str
    run_dir: Path
    status: str


def manifest_status(run_dir: str | Path) -> str | None:
    """``status`` field of a run's manifest (None when there is no readable manifest)."""
    path = Path(run_dir) / MANIFEST_FILE
    try:
        return json.loads(path.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def is_generated(run_dir: str | Path) -> bool:
    return manifest_status(run_dir) == "finished"


def is_finished(run_dir: str | Path) -> bool:
    """Generated (manifest status ``finished``) and evaluated (``metrics.json`` present)."""
    return is_generated(run_dir) and (Path(run_dir) / METRICS_FILE).is_file()


def ablation_label(name: str) -> str:
    for ablation, _, label in ABLATIONS:
        if ablation == name:
            return label
    raise KeyError(f"unknown ablation '{name}'; known: {', '.join(a for a, _, _ in ABLATIONS)}")


def _identity_names(identities: Sequence[str | Path]) -> list[str]:
    names = [Path(p).stem for p in identities]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"identity photos must have distinct file names (run directories are named after "
                         f"them); repeated: {', '.join(duplicates)}")
    return names


def run_ablation_grid(identities: Sequence[str | Path], expressions: Sequence[str], preset: str | Path,
                      out_root: str | Path, generate_fn: GenerateFn, evaluate_fn: EvaluateFn,
                      ablations: Sequence[tuple[str, Path | None, str]] = ABLATIONS,
                      overrides: Sequence[str] = ()) -> list[GridRun]:
    """Generate and evaluate every (ablation, identity photo, expression), skipping finished runs.

    Args:
        identities: input photo paths (their file stems name the runs).
        expressions: target expressions, written to ``conditioning.expression``.
        preset: params file the deltas are merged onto (``params/quick.yaml``).
        out_root: grid root; runs go to ``<out_root>/<ablation>/<identity>__<expression>``.
        generate_fn: ``generate_fn(config, photo, run_dir, info)``; ``info`` holds ``ablation``,
            ``identity``, ``expression`` for the manifest. It must leave a manifest with status
            ``finished``.
        evaluate_fn: ``evaluate_fn(run_dir)``, writes ``run_dir/metrics.json``.
        ablations: subset of :data:`ABLATIONS`.
        overrides: dotted overrides applied after the preset and the delta.

    Returns:
        one :class:`GridRun` per cell, in grid order.

    Raises:
        RuntimeError: ``generate_fn`` returned without a finished manifest, or ``evaluate_fn``
            without writing ``metrics.json``.
    """
    names = _identity_names(identities)
    out_root = Path(out_root)
    results = []
    for ablation, delta, label in ablations:
        for photo, identity in zip(identities, names):
            for expression in expressions:
                run_dir = out_root / ablation / f"{identity}__{expression}"
                if is_finished(run_dir):
                    status = "skipped"
                else:
                    status = "evaluated"
                    if not is_generated(run_dir):
                        files = [preset] + ([delta] if delta is not None else [])
                        config = load_config(*files, overrides=[*overrides, f"conditioning.expression={expression}"])
                        info = {"ablation": ablation, "identity": identity, "expression": expression}
                        generate_fn(config, Path(photo), run_dir, info)
                        if not is_generated(run_dir):
                            raise RuntimeError(f"generation of {run_dir} returned but its {MANIFEST_FILE} status is "
                                               f"{manifest_status(run_dir)!r}, not 'finished'")
                        status = "generated"
                    evaluate_fn(run_dir)
                    if not (run_dir / METRICS_FILE).is_file():
                        raise RuntimeError(f"evaluation of {run_dir} did not write {METRICS_FILE}")
                results.append(GridRun(ablation, label, identity, expression, run_dir, status))
    return results
