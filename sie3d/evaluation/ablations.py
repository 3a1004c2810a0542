"""The ablation grid: every ablation × identity × expression, generated and evaluated once.

An ablation is a small YAML delta merged onto a preset (``params/ablations/*.yaml``). Runs live at
``<out_root>/<ablation>/<identity>__<expression>/`` (the ablation directory name is what the
evaluation groups by). A run is *finished* when its ``manifest.json`` says ``"status": "finished"``
and its ``metrics.json`` exists; finished runs are skipped, so an interrupted grid resumes where it
stopped. A run whose generation finished but that was never evaluated is only evaluated.

A finished run is only reused when it was generated with the params asked for now (the params hash
in its manifest); otherwise the grid stops with an error instead of mixing stale runs into a table.

:func:`run_ablation_grid` takes the generation and evaluation as functions, so the grid logic does
not depend on the trainer; :func:`run_ablations` wires it to :func:`sie3d.generate.generate` and
:func:`sie3d.evaluation.evaluate.evaluate_runs` and writes the combined tables to ``<out_root>/evaluation``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config, load_config
from ..generate import generate
from ..run_dir import EVALUATION_METRICS as METRICS_FILE, MANIFEST_FILE, read_manifest
from ..runtime import ModelCache
from .evaluate import evaluate_run_dir, evaluate_runs
from .evaluator import Evaluator
from .paper_tables import OurRow, Provenance

PARAMS_DIR = Path(__file__).resolve().parents[2] / "params"
ABLATIONS_DIR = PARAMS_DIR / "ablations"
EVALUATION_DIR = "evaluation"  # under the grid root: runs.csv, groups.csv, metrics.md, evaluation.json

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
    return read_manifest(run_dir).get("status")


def is_generated(run_dir: str | Path) -> bool:
    return manifest_status(run_dir) == "finished"


def manifest_params_hash(run_dir: str | Path) -> str | None:
    """``params_hash`` field of a run's manifest (None when absent)."""
    return read_manifest(run_dir).get("params_hash")


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


def _preset_files(preset: str | Path | Sequence[str | Path]) -> list[str | Path]:
    return [preset] if isinstance(preset, (str, Path)) else list(preset)


def run_ablation_grid(identities: Sequence[str | Path], expressions: Sequence[str],
                      preset: str | Path | Sequence[str | Path], out_root: str | Path,
                      generate_fn: GenerateFn, evaluate_fn: EvaluateFn,
                      ablations: Sequence[tuple[str, Path | None, str]] = ABLATIONS,
                      overrides: Sequence[str] = ()) -> list[GridRun]:
    """Generate and evaluate every (ablation, identity photo, expression), skipping finished runs.

    Args:
        identities: input photo paths (their file stems name the runs).
        expressions: target expressions, written to ``conditioning.expression``.
        preset: params file(s) the deltas are merged onto (``params/quick.yaml``, or a list: preset
            then extra deltas applied to every run).
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
        ValueError: a finished run was generated with other params than those asked for now.
        RuntimeError: ``generate_fn`` returned without a finished manifest, or ``evaluate_fn``
            without writing ``metrics.json``.
    """
    names = _identity_names(identities)
    out_root = Path(out_root)
    cells = []  # (ablation, label, photo, identity, expression, run_dir, config); all checked before any work
    for ablation, delta, label in ablations:
        files = _preset_files(preset) + ([delta] if delta is not None else [])
        for photo, identity in zip(identities, names):
            for expression in expressions:
                run_dir = out_root / ablation / f"{identity}__{expression}"
                config = load_config(*files, overrides=[*overrides, f"conditioning.expression={expression}"])
                if is_generated(run_dir) and manifest_params_hash(run_dir) != config.params_hash():
                    raise ValueError(f"{run_dir} was generated with other params (hash "
                                     f"{manifest_params_hash(run_dir)}, asked for {config.params_hash()}); "
                                     "delete it or choose another output root")
                cells.append((ablation, label, Path(photo), identity, expression, run_dir, config))
    results = []
    for ablation, label, photo, identity, expression, run_dir, config in cells:
        if is_finished(run_dir):
            status = "skipped"
        else:
            status = "evaluated"
            if not is_generated(run_dir):
                generate_fn(config, photo, run_dir, {"ablation": ablation, "identity": identity,
                                                     "expression": expression})
                if not is_generated(run_dir):
                    raise RuntimeError(f"generation of {run_dir} returned but its {MANIFEST_FILE} status is "
                                       f"{manifest_status(run_dir)!r}, not 'finished'")
                status = "generated"
            evaluate_fn(run_dir)
            if not (run_dir / METRICS_FILE).is_file():
                raise RuntimeError(f"evaluation of {run_dir} did not write {METRICS_FILE}")
        results.append(GridRun(ablation, label, identity, expression, run_dir, status))
    return results


@dataclass
class AblationStudy:
    """What :func:`run_ablations` produced: the grid cells and their combined evaluation."""

    runs: list[GridRun]
    evaluation: dict[str, Any]  # sie3d.evaluation.evaluate.evaluate_runs' result (also in evaluation_dir)
    evaluation_dir: Path

    def run_dir(self, ablation: str, identity: str, expression: str) -> Path:
        for run in self.runs:
            if (run.ablation, run.identity, run.expression) == (ablation, identity, expression):
                return run.run_dir
        raise KeyError(f"no run {ablation}/{identity}__{expression} in this study")


def run_ablations(photos: Sequence[str | Path], expressions: Sequence[str],
                  preset: str | Path | Sequence[str | Path], out_root: str | Path, iterations: int | None = None,
                  ablations: Sequence[tuple[str, Path | None, str]] = ABLATIONS, overrides: Sequence[str] = (),
                  log: Callable[[str], None] = print) -> AblationStudy:
    """Generate every (ablation, photo, expression) with :func:`sie3d.generate.generate`, evaluate them
    with :func:`sie3d.evaluation.evaluate.evaluate_runs`, reusing finished runs.

    Args:
        photos: one photo file per identity (file stems name the runs; one person per photo).
        expressions: target expressions (fer/DeepFace class names).
        preset: params file(s) (``params/quick.yaml`` or ``params/paper.yaml``, optionally followed by
            deltas applied to every run).
        out_root: grid root; the combined tables go to ``<out_root>/evaluation``.
        iterations: ``train.iterations`` of every run (None: the preset's).
        ablations: subset of :data:`ABLATIONS`.
        overrides: dotted overrides applied to every run (after the preset and the ablation delta).
        log: progress lines (generation and grid status).

    A run left ``running``/``failed``/``interrupted`` by an earlier call continues from its newest
    checkpoint (the params must match). The evaluator follows the preset's ``eval`` section and
    ``run.device``.

    Raises:
        FileNotFoundError: a photo is missing (checked before any run).
        ValueError: a finished run was made with other params (see :func:`run_ablation_grid`).
    """
    missing = [str(photo) for photo in photos if not Path(photo).is_file()]
    if missing:  # before any run: a grid can take hours
        raise FileNotFoundError(f"photo(s) not found: {', '.join(missing)}")
    overrides = [*overrides, *([f"train.iterations={iterations}"] if iterations is not None else [])]
    base = load_config(*_preset_files(preset), overrides=overrides)
    evaluator = Evaluator.from_config(base, device=base.run.device)
    models = ModelCache()  # the prior and classifiers, built once for the whole grid

    def generate_run(config: Config, photo: Path, run_dir: Path, info: dict[str, Any]) -> None:
        resume = (run_dir / "checkpoints").is_dir()
        log(f"[ablations] generating {info['ablation']}/{run_dir.name}" + (" (resuming)" if resume else ""))
        generate([photo], config, run_dir, resume=resume, extra_manifest=info, log=log, models=models)

    def evaluate_run(run_dir: Path) -> None:
        evaluate_run_dir(run_dir, evaluator)

    runs = run_ablation_grid(photos, expressions, preset, out_root, generate_run, evaluate_run,
                             ablations=ablations, overrides=overrides)
    for run in runs:
        log(f"[ablations] {run.ablation}/{run.run_dir.name}: {run.status}")
    evaluation_dir = Path(out_root) / EVALUATION_DIR
    evaluation = evaluate_runs([run.run_dir for run in runs], evaluation_dir, evaluator=evaluator)
    return AblationStudy(runs=runs, evaluation=evaluation, evaluation_dir=evaluation_dir)


def paper_rows(evaluation: dict[str, Any]) -> tuple[list[OurRow], Provenance]:
    """Our group results as rows for :mod:`sie3d.evaluation.paper_tables` (groups named by ablation get the
    paper's labels) and the provenance line that must accompany them."""
    labels = {name: label for name, _, label in ABLATIONS}
    rows = [OurRow(method=labels.get(g["group"], g["group"]), fid=g["frechet"], id=g["id_mean"],
                   nps_loss=g["loss_nps"], nps_held_out=g["held_out_nps"], n_runs=g["runs"])
            for g in evaluation["groups"]]
    presets = sorted({r["preset"] for r in evaluation["runs"]})
    groups = evaluation["groups"]
    provenance = Provenance(
        preset=", ".join(presets), frechet_label=evaluation["models"]["frechet_label"],
        identity_model=evaluation["models"]["identity"],
        loss_classifier="/".join(sorted({g["loss_classifier"] for g in groups})),
        held_out_classifier="/".join(
            name + (" (unavailable)" if name in evaluation["models"]["unavailable_classifiers"] else "")
            for name in sorted({g["held_out_classifier"] for g in groups})))
    return rows, provenance
