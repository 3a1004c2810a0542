"""What the generation page (04) shows: tables of runs, galleries, curve grids, landmark checks.

Everything here reads run directories (``summary.json`` as a :class:`~sie3d.run_dir.Summary`,
``metrics.jsonl``, PNG renders written by :mod:`sie3d.generate`) and returns Markdown strings or
matplotlib figures; nothing is measured or optimised here. A run is passed as ``(run_dir, summary)``
under its name, in the order the page shows them. The ablation page's tables are in
:mod:`sie3d.evaluation.ablation_report`.

Images are ``[H, W, 3]`` ``uint8``; landmark measures are in inter-ocular units; probabilities in [0, 1].
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ..images import load_photo
from ..run_dir import FRONTAL_PHOTO_EXPRESSION, FRONTAL_RENDER, TURNTABLE_GIF, VIEW_GRID, FaceReading, Summary
from .paper_tables import markdown_table

Run = tuple[Path, Summary]  # (run directory, its summary.json)

#: landmark measures of a :class:`~sie3d.run_dir.FaceReading`'s ``landmarks`` shown in the run table, in this order
LANDMARKS = ("mouth_open", "mouth_width", "mouth_corner_lift", "brow_raise")
#: how a person would describe each target expression in landmark moves: (measure, sign of the change)
EXPECTED_MOVES = {"neutral": (("mouth_corner_lift", -1), ("mouth_open", -1)),
                  "surprise": (("mouth_open", +1), ("brow_raise", +1))}
MIN_CHANGE = 0.02  # inter-ocular units, about 1 px in 256² renders: smaller moves are landmark noise
SAME_PERSON = 0.6  # dlib's threshold on the 128-d descriptor distance


def _span(values: list[float], digits: int = 2) -> str:
    """``"0.42"`` when the values agree to ``digits`` decimals, else ``"0.38–0.45"``."""
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return low if low == high else f"{low}–{high}"


def fmt(value: float | None, digits: int = 3) -> str:
    """``n/a`` for a missing or NaN value, else fixed-point with ``digits`` decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def load_render(path: Path) -> np.ndarray:
    """A saved render as ``[H, W, 3]`` ``uint8`` (renders may be small: no minimum size)."""
    return load_photo(path, min_side=1)


def face_crop(photo: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """A square of twice the face box ``(x0, y0, x1, y1)`` (pixels) around its centre, clipped to the photo."""
    x0, y0, x1, y1 = box
    half = int(x1 - x0)
    cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
    height, width = photo.shape[:2]
    return photo[max(cy - half, 0):min(cy + half, height), max(cx - half, 0):min(cx + half, width)]


# ----------------------------------------------------------------------------------- page 04: runs

def _top2(probs: Mapping[str, float] | None) -> str:
    if not probs:
        return "—"
    return ", ".join(f"{e} {probs[e]:.2f}" for e in sorted(probs, key=probs.get, reverse=True)[:2])


#: column headers of the landmark measures in :func:`run_table`
_LANDMARK_HEADERS = ("mouth open", "mouth width", "corner lift", "brow raise")
_CLASSIFIERS = ("fer", "faceapi", "deepface")


def _report_cells(report: FaceReading, classifiers: Sequence[str]) -> list[str]:
    if report.face_found is False:
        return ["no face found"] + [""] * (len(classifiers) + len(LANDMARKS))
    cells = [fmt(report.dlib_distance) if report.dlib_distance is not None else "—"]
    cells += [_top2(report.emotions.get(c)) for c in classifiers]
    return cells + [f"{report.landmarks[k]:+.3f}" for k in LANDMARKS]


def run_table(runs: Mapping[str, Run]) -> str:
    """Markdown: the photo, then per run its render at the photo's expression and its final render.

    Columns: dlib descriptor distance to the photo, top-2 probabilities of each emotion classifier that
    produced any (fer, face-api, DeepFace), and the landmark measures of :data:`LANDMARKS`.
    """
    reports = [next(iter(runs.values()))[1].photo]
    for _, summary in runs.values():
        reports += [summary.frontal_photo_expression, summary.frontal]
    classifiers = [c for c in _CLASSIFIERS if any(r.emotions.get(c) for r in reports)]
    headers = ["image", "dlib distance", *(f"{c} (top 2)" for c in classifiers), *_LANDMARK_HEADERS]
    labels = ["photo"]
    for name in runs:
        name = name.replace("_", " ")  # lets a long run name wrap in a narrow column
        labels += [f"**{name}**, photo's expression", f"**{name}**, final"]
    return markdown_table(headers, [[label, *_report_cells(r, classifiers)] for label, r in zip(labels, reports)])


def views_table(runs: Mapping[str, Run]) -> str:
    """Markdown: per run, whether each view shows a face to dlib's HOG and to YuNet (held out; its score),
    and the back of the head's colour distance (0-255 RGB units) to the photo's hair and skin.

    Runs whose summary predates these fields show empty cells.
    """
    azimuths = sorted({v["azimuth"] for _, summary in runs.values() for v in summary.views},
                      key=lambda a: (abs(a), a))
    headers = ["run", *(f"{a:+.1f}°" for a in azimuths), "back: to hair", "back: to skin"]
    rows = []
    for name, (_, summary) in runs.items():
        views = {v["azimuth"]: v for v in summary.views}
        cells = []
        for azimuth in azimuths:
            view = views.get(azimuth)
            if view is None:
                cells.append("")
                continue
            yunet = f"YuNet {view['yunet']:.2f}" if view["yunet"] else "YuNet –"
            cells.append(("dlib ✓, " if view["dlib"] else "dlib –, ") + yunet)
        back = summary.back_of_head
        rows.append([name.replace("_", " "), *cells, fmt(back.get("to_hair"), 0), fmt(back.get("to_skin"), 0)])
    return markdown_table(headers, rows)


def judges_table(runs: Mapping[str, Run]) -> str:
    """Markdown, one row per run (any person): target, the held-out classifier (face-api) on the photo
    itself, dlib distance to the photo, the top class of the loss classifier (fer) and of the held-out
    one on the final render (✓: the target), the views YuNet finds a face in, and the back of the
    head's distance to the photo's hair and skin."""
    rows = []
    for name, (_, summary) in runs.items():
        final, target = summary.frontal, summary.expression_class or summary.expression
        photo = summary.photo.emotions.get("faceapi")
        cells = [f"{max(photo, key=photo.get)} {max(photo.values()):.2f}" if photo else ""]
        for judge in ("fer", "faceapi"):
            probs = final.emotions.get(judge)
            top = max(probs, key=probs.get) if probs else None
            cells.append("" if top is None else f"{top} {probs[top]:.2f}" + (" ✓" if top == target else ""))
        seen = [f"{v['azimuth']:+.1f}°" for v in summary.views if v["yunet"]]
        back = summary.back_of_head
        rows.append([name.replace("_", " "), target, cells[0], fmt(final.dlib_distance), *cells[1:],
                     ", ".join(seen), f"{fmt(back.get('to_hair'), 0)} / {fmt(back.get('to_skin'), 0)}"])
    return markdown_table(["run", "target", "face-api on the photo", "dlib distance", "fer (loss)",
                           "face-api (held out)", "YuNet finds a face at", "back: to hair / to skin"], rows)


@dataclass(frozen=True)
class LandmarkCheck:
    """One expected move of one run: ``before`` (render at the photo's expression) → ``after`` (final)."""

    run: str
    measure: str
    before: float
    after: float
    sign: int  # +1: the target should raise the measure, -1: lower it

    @property
    def verdict(self) -> str:
        moved = self.sign * (self.after - self.before)
        if moved > MIN_CHANGE:
            return "as expected"
        return "no clear change" if moved >= -MIN_CHANGE else "the opposite way"


def landmark_checks(runs: Mapping[str, Run]) -> list[LandmarkCheck]:
    """The expected landmark moves (:data:`EXPECTED_MOVES`) of every run whose renders both hold a face."""
    checks = []
    for name, (_, summary) in runs.items():
        before, after = summary.frontal_photo_expression, summary.frontal
        if not (before.face_found and after.face_found):
            continue
        for measure, sign in EXPECTED_MOVES.get(summary.expression, ()):
            checks.append(LandmarkCheck(name, measure, before.landmarks[measure], after.landmarks[measure], sign))
    return checks


def check_table(runs: Mapping[str, Run]) -> str:
    """Markdown, one row per expected landmark move (:func:`landmark_checks`): the run's dlib distance
    and fer's p(target) from the render at the photo's expression to the final render (on its first
    row), the measure before → after and the verdict. Runs without an expectation get one row."""
    checks = landmark_checks(runs)
    rows = []
    for name, (_, summary) in runs.items():
        before, after, target = summary.frontal_photo_expression, summary.frontal, summary.expression
        distance = after.dlib_distance
        person = "—" if distance is None else f"{distance:.3f} ({'same' if distance < SAME_PERSON else 'NOT same'})"
        p = [r.emotions.get("fer", {}).get(target) for r in (before, after)]
        first = [f"**{name.replace('_', ' ')}**", person, f"{fmt(p[0])} → {fmt(p[1])}"]
        mine = [c for c in checks if c.run == name]
        if not mine:
            rows.append([*first, "no expectation for this target", "", ""])
        for i, c in enumerate(mine):
            rows.append([*(first if i == 0 else ["", "", ""]), c.measure.replace("_", " "),
                         f"{c.before:+.3f} → {c.after:+.3f}", c.verdict])
    return markdown_table(["run", "dlib distance", "fer p(target)", "landmark", "photo's expression → final",
                           "verdict"], rows)


def run_gallery(photo_crop: np.ndarray, runs: Mapping[str, Run], panel: float = 2.1) -> plt.Figure:
    """One row: the photo crop, the first run's avatar at the photo's expression, each run's final render."""
    first_dir = next(iter(runs.values()))[0]
    panels = [(photo_crop, "photo (face crop)"),
              (load_render(first_dir / FRONTAL_PHOTO_EXPRESSION), "avatar at the photo's expression")]
    for name, (run_dir, summary) in runs.items():
        title = summary.expression + (f"\n+ '{summary.accessory}'" if summary.accessory else "")
        panels.append((load_render(run_dir / FRONTAL_RENDER), f"final: {title}"))
    fig, axes = plt.subplots(1, len(panels), figsize=(panel * len(panels), panel + 0.3), squeeze=False)
    for ax, (image, title) in zip(axes[0], panels):
        ax.imshow(image)
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def curve_grid(metrics: Mapping[str, Sequence[Mapping[str, float]]], targets: Mapping[str, str]) -> plt.Figure:
    """Three panels per run (one row per run): unweighted loss terms and the weighted total (log scale),
    the loss classifier's p(target), the blendshape coefficients; x is the iteration."""
    fig, axes = plt.subplots(len(metrics), 3, figsize=(12, 2.5 * len(metrics)), squeeze=False, sharex=True)
    for row, (name, records) in zip(axes, metrics.items()):
        steps = np.array([r["iteration"] for r in records])
        for key in sorted({k for r in records for k in r if k.startswith("loss_")}):
            values = np.array([r.get(key, np.nan) for r in records], dtype=float)
            total = key == "loss_total"
            row[0].plot(steps, np.where(values > 0, values, np.nan), "k--" if total else "-",
                        lw=1 if total else 1.3, label="total (weighted)" if total else key[5:])
        row[0].set_yscale("log")
        row[1].plot(steps, [r.get("p_target", np.nan) for r in records], color="tab:red")
        row[1].set_ylim(0, 1)
        for key in (k for k in records[0] if k.startswith("expr_")):
            row[2].plot(steps, [r[key] for r in records], label=key[5:])
        row[2].set_ylim(-0.05, 1.05)
        for ax, title in zip(row, ("loss terms", f"p({targets[name]})", "blendshape coefficients")):
            ax.set_title(f"{name}: {title}", fontsize=9)
        for ax in (row[0], row[2]):
            ax.legend(fontsize=6, ncol=2)
    for ax in axes[-1]:
        ax.set_xlabel("iteration")
    fig.tight_layout()
    return fig


def views_figure(runs: Mapping[str, Run]) -> plt.Figure:
    """Each run's ``views.png`` (front, three-quarter, side, back), one row per run, titled with its size."""
    images = {name: load_render(run_dir / VIEW_GRID) for name, (run_dir, _) in runs.items()}
    ratio = max(i.shape[0] / i.shape[1] for i in images.values())
    fig, axes = plt.subplots(len(runs), 1, figsize=(10, (10 * ratio + 0.3) * len(runs)), squeeze=False)
    for ax, (name, (_, summary)) in zip(axes[:, 0], runs.items()):
        ax.imshow(images[name])
        ax.set_title(f"{name}: {summary.n_gaussians} Gaussians, {summary.iterations} iterations, "
                     f"{fmt(summary.seconds_per_iteration, 2)} s/iteration", fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def turntables_html(runs: Mapping[str, Run], width: int = 160) -> str:
    """The runs' ``turntable.gif`` side by side as one HTML snippet (GIFs embedded as base64)."""
    cells = []
    for name, (run_dir, _) in runs.items():
        gif = base64.b64encode((run_dir / TURNTABLE_GIF).read_bytes()).decode()
        cells.append(f'<figure style="display:inline-block;margin:0 8px;text-align:center">'
                     f'<img src="data:image/gif;base64,{gif}" alt="turntable of {name}" width="{width}">'
                     f'<figcaption>{name}</figcaption></figure>')
    return "<div>" + "".join(cells) + "</div>"


def difference_figure(a: np.ndarray, b: np.ndarray, titles: tuple[str, str], gain: float = 10.0) -> plt.Figure:
    """``a``, ``b`` and their difference ``128 + gain·(b - a)`` (grey = no change), three panels."""
    diff = np.clip(128 + gain * (b.astype(float) - a.astype(float)), 0, 255).astype(np.uint8)
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.7))
    for ax, image, title in zip(axes, (a, b, diff), (*titles, f"difference × {gain:g}")):
        ax.imshow(image)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def generation_highlights(runs: Mapping[str, Run], people: Mapping[str, Run] | None = None) -> list[str]:
    """Markdown sentences with the key numbers of page 04: runs and their cost, dlib distances of the
    final renders, landmark checks passed, fer's p(target) from the photo's expression to the final,
    the held-out judges' readings and YuNet's side views.

    ``runs``: the photo's avatars (before/after shown on the page); ``people``: the avatars of the other
    portraits the page also shows. Every count is over all of them, disagreements named.
    """
    shown = {**runs, **(people or {})}
    summaries = [s for _, s in runs.values()]
    names = ", ".join(s.expression + (f" + '{s.accessory}'" if s.accessory else "") for s in summaries)
    speed = [s.seconds_per_iteration for s in summaries if s.seconds_per_iteration is not None]
    lines = [f"**{len(runs)} avatars** from one photo ({names}), {summaries[0].iterations} iterations each"
             + (f", {_span(speed)} s per iteration" if speed else "")
             + (f"; **{len(people)} more** from {len({n.rsplit('_', 1)[0] for n in people})} other portraits"
                if people else "")]
    distances = [s.frontal.dlib_distance for _, s in shown.values() if s.frontal.dlib_distance is not None]
    if distances:
        same = sum(d < SAME_PERSON for d in distances)
        lines.append(f"dlib distance of the final renders to their photo **{_span(distances, 3)}**: "
                     f"{same} of {len(distances)} are the photo's person by dlib's < {SAME_PERSON} rule (dlib's "
                     "descriptor conditions the run: a check, not a held-out judge)")
    checks = landmark_checks(runs)
    if checks:
        ok = sum(c.verdict == "as expected" for c in checks)
        lines.append(f"landmark moves (no loss reads them): **{ok} of {len(checks)}** as expected")
    moves = []
    for name, (_, s) in runs.items():
        p = [r.emotions.get("fer", {}).get(s.expression) for r in (s.frontal_photo_expression, s.frontal)]
        if None not in p:
            moves.append(f"{name} {p[0]:.2f} → **{p[1]:.2f}**")
    if moves:
        lines.append("fer's p(target) (the loss classifier), avatar at the photo's expression → final: "
                     + "; ".join(moves))
    readings = []
    for name, (_, s) in shown.items():
        probs = s.frontal.emotions.get("faceapi")
        if probs:
            top = max(probs, key=probs.get)
            readings.append((name.replace("_", " "), top, probs[top], top == (s.expression_class or s.expression)))
    if readings:
        hits = sum(hit for *_, hit in readings)
        misses = [f"{name} read as **{top}** {p:.2f}" for name, top, p, hit in readings if not hit]
        lines.append(f"held-out judge (face-api), top class of the final render = target in **{hits} of "
                     f"{len(readings)}** avatars" + (": " + "; ".join(misses) if misses else ""))
    turned = [s for _, s in shown.values() if s.views]
    if turned:
        seen = sum(any(v["yunet"] for v in s.views if abs(abs(v["azimuth"]) - 67.5) < 1) for s in turned)
        lines.append(f"a face at ±67.5° for YuNet (held out) in **{seen} of {len(turned)}** avatars")
    return lines
