"""The paper's Tables 1 and 2 as data, and our numbers placed beside them (markdown and bar plots).

Paper numbers come from ``shared/reference/settings.md`` (SIE3D paper, Tables 1-2): FID with Inception
features, ID as CosFace cosine similarity, NPS as a cross-entropy toward "neutral" whose classifier the
paper does not name (its expression loss uses DeepFace). Our numbers always carry their provenance
(preset, feature space, identity model, classifiers) and sit in columns of their own: one column holds
one model's numbers, the paper's columns apart from ours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table: FID ↓, ID ↑, NPS ↓."""

    method: str
    fid: float
    id: float
    nps: float


#: Table 1: comparison with image-to-3D methods ("Ours" is SIE3D)
TABLE1: tuple[PaperRow, ...] = (
    PaperRow("Wonder3D", 274.10, 0.2603, 0.4621),
    PaperRow("SF3D", 290.89, 0.3187, 2.9998),
    PaperRow("Arc2Avatar", 237.81, 0.4459, 3.5884),
    PaperRow("SIE3D", 227.11, 0.3672, 0.3667),
)
#: Table 2: ablation study
TABLE2: tuple[PaperRow, ...] = (
    PaperRow("full", 227.11, 0.3672, 0.3667),
    PaperRow("w/o semantic embedding", 238.43, 0.3977, 3.1178),
    PaperRow("w/o perceptual expression loss", 321.68, 0.2539, 3.8043),
)
PAPER_MODELS = ("FID: Inception-v3; ID: CosFace; NPS: a cross-entropy toward neutral by a classifier the paper "
                "does not name (its expression loss uses DeepFace)")


@dataclass(frozen=True)
class OurRow:
    """Our measurement of one method / ablation (None where it could not be measured).

    ``method`` should match a paper row's method (``full``, ``w/o semantic embedding``, ...) to be
    placed beside it.
    """

    method: str
    fid: float | None = None
    id: float | None = None
    nps_loss: float | None = None  # classifier used in the expression loss
    nps_held_out: float | None = None  # classifier the optimisation never saw
    n_runs: int = 0


@dataclass(frozen=True)
class Provenance:
    """What produced our numbers; printed above every table and on every plot."""

    preset: str
    frechet_label: str  # e.g. "Fréchet distance in dlib-descriptor space (not FID)"
    identity_model: str
    loss_classifier: str
    held_out_classifier: str

    @property
    def fid_is_inception(self) -> bool:
        return self.frechet_label.startswith("FID")

    def describe(self) -> str:
        return (f"preset `{self.preset}`; distribution distance: {self.frechet_label}; "
                f"ID: {self.identity_model} cosine; NPS with the loss classifier {self.loss_classifier} and the "
                f"held-out classifier {self.held_out_classifier}")


def _cell(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table (cells converted with ``str``; ``|`` escaped)."""

    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    if any(len(row) != len(headers) for row in rows):
        raise ValueError("every row needs one cell per header")
    return "\n".join([line(headers), line(["---"] * len(headers)), *(line(row) for row in rows)])


def comparison_markdown(ours: Sequence[OurRow], provenance: Provenance,
                        paper: Sequence[PaperRow] = TABLE2, title: str = "Table 2 (ablation)") -> str:
    """One row per method (the paper's methods in its order, then our extra ones); the paper's three
    columns first, then ours, each column one model's numbers ("—": that source has no such row).

    Our distribution distance gets a column only when some row has a value; it is headed "FID" only
    when it is an Inception FID. Only the methods we ran carry numbers in our columns, so our numbers
    are never ranked among the paper's other methods.
    """
    ours_by_method = {row.method: row for row in ours}
    paper_by_method = {row.method: row for row in paper}
    order = [row.method for row in paper] + [row.method for row in ours if row.method not in paper_by_method]
    with_distance = any(row.fid is not None and not math.isnan(row.fid) for row in ours)
    distance = "FID ↓ (Inception)" if provenance.fid_is_inception else f"{provenance.frechet_label} ↓"
    headers = ["method", "paper: FID ↓ (Inception)", "paper: ID ↑ (CosFace)", "paper: NPS ↓ (classifier not named)",
               *([f"ours: {distance}"] if with_distance else []), f"ours: ID ↑ ({provenance.identity_model})",
               f"ours: NPS ↓ ({provenance.loss_classifier}, loss)",
               f"ours: NPS ↓ ({provenance.held_out_classifier}, held out)", "our runs"]
    rows = []
    for method in order:
        p, o = paper_by_method.get(method), ours_by_method.get(method)
        cells = [method, *((_cell(p.fid, 2), _cell(p.id, 4), _cell(p.nps, 4)) if p else ("—",) * 3)]
        if o is None:
            cells += ["—"] * (len(headers) - len(cells))
        else:
            cells += [*([_cell(o.fid, 2 if provenance.fid_is_inception else 4)] if with_distance else []),
                      _cell(o.id, 4), _cell(o.nps_loss, 4), _cell(o.nps_held_out, 4), str(o.n_runs)]
        rows.append(cells)
    notes = [f"**{title}.** Paper: {PAPER_MODELS}.", f"Ours: {provenance.describe()}."]
    if not with_distance:
        notes.append(f"Our {provenance.frechet_label} is left out: not measurable here (see the notes above).")
    elif not provenance.fid_is_inception:
        notes.append("Our distribution distance is not FID: its scale is not comparable with the paper's FID.")
    if provenance.identity_model.lower() not in ("cosface", "arcface"):
        notes.append(f"Our ID uses {provenance.identity_model}, not CosFace: compare rankings, not values.")
    return "\n\n".join([" ".join(notes), markdown_table(headers, rows)])


def comparison_bar_plot(ours: Sequence[OurRow], provenance: Provenance,
                        paper: Sequence[PaperRow] = TABLE2) -> plt.Figure:
    """Two rows of bar charts (paper on top, ours below), one column per metric.

    Each panel has its own y axis titled with the model that measured it, so values from different
    feature spaces or classifiers are never drawn on one scale. Our NPS shows the loss classifier and
    the held-out classifier side by side.
    """
    methods = [row.method for row in paper] + [row.method for row in ours if row.method not in
                                                {p.method for p in paper}]
    x = list(range(len(methods)))
    paper_by_method = {row.method: row for row in paper}
    ours_by_method = {row.method: row for row in ours}

    def values(table, attr):
        return [getattr(table[m], attr) if m in table and getattr(table[m], attr) is not None else math.nan
                for m in methods]

    fig, axes = plt.subplots(2, 3, figsize=(11, 6.5), sharex=True)
    paper_panels = [("fid", "FID ↓ (Inception)"), ("id", "ID ↑ (CosFace)"), ("nps", "NPS ↓ (classifier not named)")]
    for ax, (attr, title) in zip(axes[0], paper_panels):
        ax.bar(x, values(paper_by_method, attr), color="#7f7f7f")
        ax.set_title(f"paper: {title}", fontsize=10)
    our_fid_title = "FID ↓" if provenance.fid_is_inception else provenance.frechet_label + " ↓"
    axes[1][0].bar(x, values(ours_by_method, "fid"), color="#1f77b4")
    axes[1][0].set_title(f"ours: {our_fid_title}", fontsize=9)
    axes[1][1].bar(x, values(ours_by_method, "id"), color="#1f77b4")
    axes[1][1].set_title(f"ours: ID ↑ ({provenance.identity_model})", fontsize=10)
    width = 0.4
    axes[1][2].bar([i - width / 2 for i in x], values(ours_by_method, "nps_loss"), width,
                   label=f"loss classifier: {provenance.loss_classifier}", color="#1f77b4")
    axes[1][2].bar([i + width / 2 for i in x], values(ours_by_method, "nps_held_out"), width,
                   label=f"held out: {provenance.held_out_classifier}", color="#ff7f0e")
    axes[1][2].set_title("ours: NPS ↓", fontsize=10)
    bottom, top = axes[1][2].get_ylim()
    axes[1][2].set_ylim(bottom, top * 1.3)  # headroom so the legend never covers a bar
    axes[1][2].legend(fontsize=8, loc="upper left", framealpha=0.8)
    for ax, attrs in zip(axes[1], (["fid"], ["id"], ["nps_loss", "nps_held_out"])):
        if all(math.isnan(v) for attr in attrs for v in values(ours_by_method, attr)):
            ax.set_yticks([])
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", va="center", color="#7f7f7f")
        ax.set_xticks(x)
        ax.set_xticklabels(methods, rotation=30, ha="right", fontsize=8)
    fig.suptitle(f"Paper vs ours (preset {provenance.preset}); missing bars: not measured", fontsize=11)
    fig.tight_layout()
    return fig
