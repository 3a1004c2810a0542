"""Figures shared by notebooks and the book (matplotlib only; no logic of the method lives here)."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

#: (label, x, y, colour) of the pipeline boxes, in axes units
_PIPELINE_BOXES = {
    "photo": ("photo", 0.07, 0.80, "#dbe9f6"),
    "face": ("face: detect + align\nidentity (ArcFace 512-d)", 0.27, 0.80, "#dbe9f6"),
    "text": ("text: view / expression /\naccessory, intensity η", 0.27, 0.52, "#fde9d9"),
    "cond": ("conditioning\nc_default → c_view (eq 2)\n→ c_expr (eq 4, 6) → c_acc (eq 5)", 0.52, 0.66, "#fde9d9"),
    "template": ("head template\n(built-in / FLAME / mesh)", 0.07, 0.22, "#e2f0d9"),
    "gauss": ("mesh-bound Gaussians\nto_world()", 0.27, 0.22, "#e2f0d9"),
    "render": ("render(cameras)\ngsplat / tiled PyTorch", 0.50, 0.22, "#e2f0d9"),
    "ism": ("ISM guidance\nArc2Face UNet + Perp-Neg", 0.77, 0.66, "#fde9d9"),
    "emotion": ("emotion classifier\nL_emotion (eq 8)", 0.77, 0.40, "#fff2cc"),
    "loss": ("Σ λ·L: ISM, emotion,\npos, lap, TV, scale (eq 9)", 0.77, 0.13, "#eeeeee"),
}
_PIPELINE_ARROWS = [
    ("photo", "face"), ("face", "cond"), ("text", "cond"), ("cond", "ism"), ("template", "gauss"),
    ("gauss", "render"), ("render", "ism"), ("render", "emotion"), ("ism", "loss"), ("emotion", "loss"),
    ("loss", "gauss"),
]


def pipeline_figure(figsize: tuple[float, float] = (12, 5.5)) -> plt.Figure:
    """The SIE3D data flow (paper Fig. 1 redrawn): inputs, conditioning, Gaussians, losses."""
    fig, ax = plt.subplots(figsize=figsize)
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    for label, x, y, colour in _PIPELINE_BOXES.values():
        ax.add_patch(FancyBboxPatch((x - 0.095, y - 0.085), 0.19, 0.17, boxstyle="round,pad=0.01",
                                    facecolor=colour, edgecolor="#555555"))
        ax.text(x, y, label, ha="center", va="center", fontsize=8.5)
    for a, b in _PIPELINE_ARROWS:
        _, xa, ya, _ = _PIPELINE_BOXES[a]
        _, xb, yb, _ = _PIPELINE_BOXES[b]
        ax.add_patch(FancyArrowPatch((xa, ya), (xb, yb), arrowstyle="-|>", mutation_scale=12,
                                     shrinkA=38, shrinkB=38, color="#333333",
                                     connectionstyle="arc3,rad=0.0" if (a, b) != ("loss", "gauss") else "arc3,rad=-0.25"))
    ax.set_title("SIE3D: one photo + text → expressive 3D Gaussian head avatar", fontsize=12)
    return fig
