"""Evaluate generated avatars: identity similarity, NPS and target-expression accuracy with two
emotion classifiers, and a distribution distance (FID/KID or the labelled dlib substitute).

Run directory layout read here (the trainer writes it; the names are the constants below)::

    <run>/config.yaml         resolved config (sie3d.config.save_config)
    <run>/manifest.json       sie3d.run_dir.RunDir manifest; optional "ablation" key groups runs
    <run>/summary.json        {"photos": [input photo paths, absolute or relative to <run>], ...}
    <run>/frontal.png         the frontal evaluation render
    <run>/views/*.png         further renders (or <run>/renders/*.png)

Outputs: ``<run>/metrics.json`` and ``<run>/metrics.csv`` per run; in ``--out``: ``runs.csv`` (one
row per run), ``groups.csv`` (runs pooled per group: ablation name, else the run's parent
directory), ``metrics.md`` (both tables with the models that produced them) and ``evaluation.json``.

Metrics per run:

* **ID**: cosine similarity between the identity embedding of the input photo(s) and of every
  render in which a face is found (frontal, and mean / min over all renders), with the evaluation's
  held-out encoder (``eval.identity_model``: ArcFace R50 with real weights, SFace offline) and,
  beside it, the encoder that conditions the run (``models.identity``); both are named.
* **NPS** (mean ``-ln p_neutral`` over the renders in which a face is found) and **target-expression
  accuracy** (fraction of them whose top class is ``conditioning.expression``), with the classifier
  of the expression loss (``models.emotion_loss_classifier``) and the held-out one
  (``models.emotion_eval_classifier``) side by side. A classifier whose weights are missing is
  reported as unavailable, with the reason.
* **Distribution distance** between all renders and the reference images (``--reference DIR``,
  else the input photos): FID/KID with Inception, or the Fréchet distance / MMD² in dlib-descriptor
  space, labelled as such. Both need at least 2 embedded images per side; with one input photo per
  run only the pooled group value (or ``--reference``) can be computed, and the reason is recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..runtime import write_json_atomic
from .evaluator import EMOTION_ROLES, Evaluator
from .features import FRECHET_LABELS, KID_LABELS
from .run_files import RunFiles, read_run, reference_images
from .tables import (
    EVALUATION_JSON,
    GROUPS_CSV,
    METRICS_CSV,
    METRICS_JSON,
    RUNS_CSV,
    TABLE_MD,
    flat_row,
    group_summary,
    markdown_report,
    write_csv,
)


def write_run_metrics(run: RunFiles, metrics: dict[str, Any]) -> None:
    """``metrics.json`` and the one-row ``metrics.csv`` into the run directory."""
    write_json_atomic(run.run_dir / METRICS_JSON, metrics)
    write_csv(run.run_dir / METRICS_CSV, [flat_row(metrics)])


def evaluate_run_dir(run_dir: str | Path, evaluator: Evaluator,
                     reference: Sequence[Path] | None = None) -> dict[str, Any]:
    """Evaluate one run directory and write its ``metrics.json`` / ``metrics.csv`` (no combined tables).

    The evaluator caches detections and features by path, so a later :func:`evaluate_runs` over the
    same runs with the same evaluator only re-runs the cheap per-run steps.
    """
    run = read_run(run_dir)
    metrics = evaluator.evaluate_run(run, reference)
    write_run_metrics(run, metrics)
    return metrics


def evaluate_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, reference_dir: str | Path | None = None,
                  evaluator: Evaluator | None = None, **evaluator_options: Any) -> dict[str, Any]:
    """Evaluate runs, write per-run files into each run and the combined tables into ``out_dir``.

    Args:
        run_dirs: run directories (layout in the module docstring); all are validated first.
        out_dir: where ``runs.csv``, ``groups.csv``, ``metrics.md``, ``evaluation.json`` go.
        reference_dir: reference images for the distribution distance; default the input photos.
        evaluator: a configured :class:`Evaluator` (else one is built from ``evaluator_options``).

    Returns:
        the combined evaluation (also in ``evaluation.json``): ``runs``, ``groups``, ``models``.
    """
    if not run_dirs:
        raise ValueError("give at least one run directory")
    runs = [read_run(d) for d in run_dirs]
    names = [r.name for r in runs]
    reference = reference_images(reference_dir) if reference_dir else None
    evaluator = evaluator or Evaluator(**evaluator_options)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    results = []
    for run in runs:
        metrics = evaluator.evaluate_run(run, reference)
        if names.count(run.name) > 1:  # same leaf name in two groups: keep rows distinguishable
            metrics["run"] = f"{run.group}/{run.name}"
        write_run_metrics(run, metrics)
        results.append(metrics)

    groups = []
    for group in dict.fromkeys(r.group for r in runs):
        members = [(run, res) for run, res in zip(runs, results) if run.group == group]
        group_reference = reference or list(dict.fromkeys(p for run, _ in members for p in run.photos))
        distribution = evaluator.distribution(
            evaluator.features([p for run, _ in members for p in run.renders]), evaluator.features(group_reference))
        groups.append(group_summary(group, [res for _, res in members], distribution))

    classifier_names = {r["emotion"][role]["classifier"] for r in results for role, _ in EMOTION_ROLES}
    evaluation = {
        "reference": f"{reference_dir} ({len(reference)} images)" if reference else "the runs' input photos",
        "models": {
            "space": evaluator.space, "feature_model": evaluator.extractor.name,
            "frechet_label": FRECHET_LABELS[evaluator.space], "kid_label": KID_LABELS[evaluator.space],
            "identity": evaluator.identity_encoder().name, "identity_notes": evaluator.identity_notes,
            "identity_conditioning": "/".join(sorted({r["identity_conditioning"]["model"] for r in results})),
            "detector": evaluator.detector, "kid_subsets": evaluator.kid_subsets,
            "kid_subset_size": evaluator.kid_subset_size,
            "unavailable_classifiers": sorted(n for n in classifier_names
                                              if isinstance(evaluator.emotion_classifier(n), str)),
        },
        "groups": groups,
        "runs": results,
    }
    write_csv(out_dir / RUNS_CSV, [flat_row(r) for r in results])
    write_csv(out_dir / GROUPS_CSV, groups)
    (out_dir / TABLE_MD).write_text(markdown_report(evaluation))
    write_json_atomic(out_dir / EVALUATION_JSON, evaluation)
    return evaluation
