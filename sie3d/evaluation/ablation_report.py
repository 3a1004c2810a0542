"""What the ablation page (05) shows: the metrics of each ablation group, their notes, galleries of the
runs' renders, how far each ablation moved from the full method, and the page's key numbers.

Everything here reads the ``evaluation`` dict of :func:`sie3d.evaluation.evaluate.evaluate_runs`, run
renders and summaries (:class:`~sie3d.run_dir.Summary`), and returns Markdown strings or matplotlib
figures; nothing is measured here. Probabilities in [0, 1]; pixel differences in 0-255 units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from ..run_dir import Summary
from .paper_tables import markdown_table
from ..avatar.template import EXPRESSION_PROTOTYPES
from .report import EXPECTED_MOVES, fmt, load_render


def metrics_table(evaluation: Mapping[str, Any], labels: Mapping[str, str], loss_classifier: str,
                  held_out_classifier: str) -> str:
    """Markdown: one row per group (ablation) of ``evaluation``: renders with a face, ID with the held-out
    encoder and with the one that conditions the run, NPS and accuracy with the loss and held-out
    classifiers, and the distribution distance (left out when no group has one: :func:`metrics_notes`
    says why). Each column holds one model's numbers, named in its header."""
    models = evaluation["models"]
    conditioning = models.get("identity_conditioning")
    with_distance = any(group["frechet"] is not None for group in evaluation["groups"])
    headers = ["ablation", "renders with a face", f"ID ↑ ({models['identity']}, held out)",
               *([f"ID ↑ ({conditioning}, conditioning)"] if conditioning else []),
               f"NPS ↓ ({loss_classifier}, loss)", f"acc ↑ ({loss_classifier}, loss)",
               f"NPS ↓ ({held_out_classifier}, held out)", f"acc ↑ ({held_out_classifier}, held out)",
               *([f"{models['frechet_label']} ↓"] if with_distance else [])]
    rows = []
    for group in evaluation["groups"]:
        faces = sum(r["identity"]["n_renders_with_face"] for r in evaluation["runs"] if r["group"] == group["group"])
        rows.append([labels.get(group["group"], group["group"]), f"{faces}/{group['renders']}",
                     fmt(group["id_mean"]), *([fmt(group.get("id_conditioning_mean"))] if conditioning else []),
                     fmt(group["loss_nps"]), fmt(group["loss_accuracy"], 2),
                     fmt(group["held_out_nps"]), fmt(group["held_out_accuracy"], 2),
                     *([fmt(group["frechet"])] if with_distance else [])])
    return markdown_table(headers, rows)


def metrics_notes(evaluation: Mapping[str, Any]) -> str:
    """Markdown bullets: why a classifier or distance is missing, and which identity encoder measured ID."""
    models = evaluation["models"]
    notes = sorted({f"{role} classifier `{r['emotion'][role]['classifier']}`: {r['emotion'][role]['note']}"
                    for r in evaluation["runs"] for role in ("loss", "held_out") if r["emotion"][role]["note"]})
    notes += sorted({f"{models['frechet_label']}: {g['distance_note']}" for g in evaluation["groups"]
                     if g["distance_note"]})
    notes.append(f"identity encoder: {models['identity']} (detector {models['detector']})"
                 + (f"; {'; '.join(models['identity_notes'])}" if models["identity_notes"] else "")
                 + (f"; beside it the encoder that conditions the run, {models['identity_conditioning']} (not held out)"
                    if models.get("identity_conditioning") else ""))
    return "\n".join(f"* {n}" for n in notes)


def gallery_title(label: str, run: Mapping[str, Any]) -> str:
    """A gallery panel's title: the ablation's label, then the run's numbers as the metrics table shows
    them (ID: mean over the renders with a face; NPS of the loss and held-out classifiers), each named
    by its judge. ``run`` is one entry of ``evaluation["runs"]``."""
    identity, emotion = run["identity"], run["emotion"]
    return (f"{label}\nID ({identity['model']}) {fmt(identity['mean'])}\n"
            f"NPS {emotion['loss']['classifier']} {fmt(emotion['loss']['nps'])}, "
            f"{emotion['held_out']['classifier']} {fmt(emotion['held_out']['nps'])}")


def ablation_gallery(photo: np.ndarray, run_renders: Mapping[str, Sequence[Path]], titles: Mapping[str, str],
                     panel: float = 1.5) -> plt.Figure:
    """One row per ablation: the input photo, then the run's renders (frontal first), the first titled
    with ``titles[ablation]`` (e.g. its label and scores) and the others with their file stem."""
    n_cols = 1 + max(len(r) for r in run_renders.values())
    fig, axes = plt.subplots(len(run_renders), n_cols, figsize=(panel * n_cols, (panel + 0.55) * len(run_renders)),
                             squeeze=False)
    for row, (ablation, renders) in zip(axes, run_renders.items()):
        for ax in row:
            ax.set_axis_off()
        row[0].imshow(photo)
        row[0].set_title("input photo", fontsize=7)
        for ax, path in zip(row[1:], renders):
            ax.imshow(load_render(path))
            ax.set_title(path.stem, fontsize=7)
        row[1].set_title(titles[ablation], fontsize=7)
    fig.tight_layout()
    return fig


def movement_table(frontals: Mapping[str, Path], summaries: Mapping[str, Summary],
                   labels: Mapping[str, str], classifiers: Sequence[str], reference: str = "full") -> str:
    """Markdown: per ablation, the mean |pixel difference| (0-255) of its frontal render to the
    ``reference`` run's, its three largest blendshape coefficients (≥ 0.05), and each classifier's
    p_neutral and top class on the frontal render (from ``summary.json``)."""
    base = load_render(frontals[reference]).astype(np.float64)
    rows = []
    for ablation, path in frontals.items():
        summary = summaries[ablation]
        coefficients = sorted(summary.expression_coefficients.items(), key=lambda kv: -abs(kv[1]))
        cells = []
        for classifier in classifiers:
            probs = summary.frontal.emotions.get(classifier, {})
            top = max(probs, key=probs.get) if probs else "no face"
            cells += [fmt(probs.get("neutral")), f"{top} ({fmt(probs.get(top), 2)})" if probs else top]
        rows.append([labels.get(ablation, ablation),
                     f"{np.abs(load_render(path).astype(np.float64) - base).mean():.2f}",
                     ", ".join(f"{n} {v:.2f}" for n, v in coefficients[:3] if abs(v) >= 0.05) or "all < 0.05",
                     *cells])
    headers = [h for c in classifiers for h in (f"p_neutral ({c})", f"top class ({c})")]
    return markdown_table(["ablation", f"mean abs diff to {reference} (0-255)", "largest blendshape coefficients",
                           *headers], rows)


def group_value(evaluation: Mapping[str, Any], group: str, key: str) -> float | None:
    """``evaluation["groups"][...][key]`` of the named group (None when the group or value is missing)."""
    for g in evaluation["groups"]:
        if g["group"] == group:
            return g.get(key)
    return None


#: relative difference below which two single-seed runs' numbers are read as equal (no direction claimed)
SAME_WITHIN = 0.02


def _direction(full: float, without: float, lower_is_better: bool) -> str:
    """Which way a metric moves when the loss is added (``without`` → ``full``), in words; differences
    within :data:`SAME_WITHIN` of the larger magnitude are "about equal"."""
    if abs(full - without) <= SAME_WITHIN * max(abs(full), abs(without)):
        return f"about equal with and without the loss (within {SAME_WITHIN:.0%})"
    better = (full < without) == lower_is_better
    return ("lower" if full < without else "higher") + " with the loss" + (" (better)" if better else " (worse)")


def ablation_highlights(evaluation: Mapping[str, Any], labels: Mapping[str, str], loss_classifier: str,
                        paper: tuple[tuple[float, float], tuple[float, float]]) -> list[str]:
    """Markdown sentences with the key numbers of page 05: the grid, then the direction of Table 2's
    full method against the run without the perceptual expression loss (``no_emotion_loss``) as each
    judge reads it: NPS (↓) by the paper, the loss classifier and the held-out classifier, and ID (↑)
    by the paper and the held-out encoder, each saying whether it agrees with the paper's direction.
    ``paper``: ((NPS full, NPS without the loss), (ID full, ID without the loss)) of the paper's Table 2."""
    groups = [g["group"] for g in evaluation["groups"]]
    lines = [f"**{len(evaluation['runs'])} runs** in {len(groups)} ablations: "
             + ", ".join(labels.get(g, g) for g in groups)]
    for metric, lower_is_better, judges, (paper_full, paper_without) in [
            ("NPS ↓", True, [(f"{loss_classifier} (the loss classifier)", "loss_nps"),
                             (f"{group_value(evaluation, 'full', 'held_out_classifier') or 'held-out classifier'}"
                              " (held out)", "held_out_nps")], paper[0]),
            ("ID ↑", False, [(f"{evaluation['models']['identity']} (held out)", "id_mean")], paper[1])]:
        reference = _direction(paper_full, paper_without, lower_is_better)
        parts = [f"paper {paper_full:.3f} vs {paper_without:.3f}, {reference}"]
        for judge, key in judges:
            values = [group_value(evaluation, g, key) for g in ("full", "no_emotion_loss")]
            if None in values:
                parts.append(f"{judge}: not available here (see the notes)")
                continue
            mine = _direction(*values, lower_is_better)
            agree = ("as in the paper" if mine == reference else "no direction to compare" if mine.startswith("about")
                     else "**the opposite of the paper**")
            parts.append(f"{judge} **{values[0]:.3f}** vs **{values[1]:.3f}**, {mine}: {agree}")
        lines.append(f"Table 2, {metric} full vs without the perceptual expression loss: " + "; ".join(parts))
    return lines


def _landmark_moves(summary: Summary) -> dict[str, float | None]:
    """The target's expected landmark moves (inter-ocular units) from the render at the photo's expression
    to the final one (None: no face in one of them)."""
    before, after = summary.frontal_photo_expression, summary.frontal
    found = before.face_found and after.face_found
    return {measure: after.landmarks[measure] - before.landmarks[measure] if found else None
            for measure, _ in EXPECTED_MOVES.get(summary.expression, ())}


def _final_reading(summary: Summary, classifiers: Sequence[str]) -> dict[str, float | None]:
    """Each classifier's p(target) on the final frontal render, then :func:`_landmark_moves`."""
    return {**{c: summary.frontal.emotions.get(c, {}).get(summary.expression) for c in classifiers},
            **_landmark_moves(summary)}


def expression_parts_table(summaries: Mapping[str, Summary], labels: Mapping[str, str],
                           classifiers: Sequence[str]) -> str:
    """Markdown, one row per part of the offline expression (``summaries`` by ablation, ``labels`` by
    ablation): each classifier's p(target) on the frontal render at the photo's expression → the final
    one, the expected landmark moves (:data:`sie3d.evaluation.report.EXPECTED_MOVES`, inter-ocular units)
    over the same two renders, and the final blendshape coefficients the target's prototype uses."""
    rows = []
    for name, summary in summaries.items():
        target, before, after = summary.expression, summary.frontal_photo_expression, summary.frontal
        cells = [labels[name]]
        for classifier in classifiers:
            p = [r.emotions.get(classifier, {}).get(target) for r in (before, after)]
            cells.append(f"{fmt(p[0])} → {fmt(p[1])}")
        cells += ["no face" if move is None else f"{move:+.3f}" for move in _landmark_moves(summary).values()]
        cells.append(", ".join(f"{k.replace('_', ' ')} {summary.expression_coefficients.get(k, 0.0):.2f}"
                               for k in EXPRESSION_PROTOTYPES.get(target, {})))
        rows.append(cells)
    target = next(iter(summaries.values())).expression
    moves = [f"Δ {m.replace('_', ' ')}" for m, _ in EXPECTED_MOVES.get(target, ())]
    return markdown_table(["part", *(f"{c} p({target})" for c in classifiers), *moves, "final blendshapes"], rows)


def expression_parts_reading(summaries: Mapping[str, Summary], classifiers: Sequence[str]) -> str:
    """Markdown sentences crediting the offline expression (``summaries`` of :data:`EXPRESSION_PARTS`'s
    ablations: ``full``, ``no_emotion_loss`` = prototype only, ``no_expression_prior`` = loss only) from its
    numbers: what the prototype alone and the loss alone reach, and what each adds to the other (the final
    frontal render's p(target) per classifier and the expected landmark moves, inter-ocular units)."""
    both, prototype, loss = (summaries[a] for a in ("full", "no_emotion_loss", "no_expression_prior"))
    target = both.expression

    def listed(values: Mapping[str, float | None], signed: bool = False) -> str:
        shown = [f"{name.replace('_', ' ')} {'n/a' if v is None else f'{v:+.3f}' if signed else f'{v:.3f}'}"
                 for name, v in values.items()]
        return ", ".join(shown)

    def gain(a: Summary, b: Summary) -> dict[str, float | None]:
        ra, rb = _final_reading(a, classifiers), _final_reading(b, classifiers)
        return {k: None if ra[k] is None or rb[k] is None else ra[k] - rb[k] for k in ra}

    return (f"With the prototype alone the final render reads {listed(_final_reading(prototype, classifiers))} (p({target}) per judge, "
            f"then the landmark moves); with the emotion loss alone {listed(_final_reading(loss, classifiers))}. Adding the emotion "
            f"loss to the prototype changes these by {listed(gain(both, prototype), True)}; adding the prototype "
            f"to the loss by {listed(gain(both, loss), True)}. The larger share of each number is the part "
            "that makes it (one identity, one seed: differences of a few hundredths are within noise).")
