"""Figures shared by notebooks and the book (matplotlib only; no logic of the method lives here).

The pipeline diagram is hand-placed on a grid whose cells are sized from the measured extent of each
box's text, so no label overflows its box; every arrow is a horizontal/vertical polyline between box
edges along free grid lanes. :func:`pipeline_diagram` returns that geometry (inches) so tests can
check it: boxes inside the canvas and apart, text inside its box, arrows crossing no other box.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path as MplPath

#: box name -> (package title, body, grid column, grid row, colour); row 0 is the top
PIPELINE_BOXES: dict[str, tuple[str, str, int, int, str]] = {
    "photo": ("photo", "one portrait", 0, 0, "#dbe9f6"),
    "text": ("text", "expression,\naccessory,\nintensity η", 0, 1, "#dbe9f6"),
    "template": ("head template", "built-in, FLAME\nor any mesh", 0, 2, "#dbe9f6"),
    "face": ("face", "detect + align,\nidentity (512-d),\n68 landmarks", 1, 0, "#e8e0f4"),
    "conditioning": ("diffusion", "conditioning:\nc_default → c_view (2)\n→ c_expr (4, 6) → c_acc (5)",
                     1, 1, "#fde9d9"),
    "avatar": ("avatar", "mesh-bound Gaussians,\nblendshape\ncoefficients", 1, 2, "#e2f0d9"),
    "subject": ("subject", "prepared once:\nexpression fit,\nreference view", 2, 0, "#e8e0f4"),
    "guidance": ("diffusion", "ISM guidance:\nArc2Face UNet,\nPerp-Neg views", 2, 1, "#fde9d9"),
    "render": ("render", "cameras →\nrasterize (gsplat\nor PyTorch)", 2, 2, "#e2f0d9"),
    "train": ("train", "Σ λ·L (9): ISM,\nemotion, pos, lap,\nTV, scale, ref", 3, 1, "#eeeeee"),
    "emotion": ("face", "emotion classifier\non the render,\nL_emotion (8)", 3, 2, "#fff2cc"),
    "generate": ("generate", "runs the loop; writes\navatar.ply, renders,\nturntable, summary.json", 1, 3,
                 "#f2f2f2"),
    "evaluation": ("evaluation", "ID ↑, NPS ↓, FID ↓,\nablations\n(Tables 1, 2)", 2, 3, "#f2f2f2"),
}

#: (from, to, label): straight arrows between neighbouring grid cells (same row or same column)
PIPELINE_ARROWS: tuple[tuple[str, str, str], ...] = (
    ("photo", "face", ""), ("face", "subject", ""), ("text", "conditioning", ""),
    ("face", "conditioning", "identity"), ("conditioning", "guidance", ""), ("template", "avatar", ""),
    ("avatar", "render", ""), ("render", "guidance", "views"), ("guidance", "train", ""),
    ("render", "emotion", ""), ("emotion", "train", ""), ("generate", "evaluation", ""),
)

_PAD = 0.09  # inches of padding between a box's text and its edge
_GAP = 0.42  # inches between neighbouring boxes (room for an arrow and its label)
_LOOP = 0.25  # inches between the right column and the feedback arrow


@dataclass
class Diagram:
    """Geometry of the drawn pipeline, in inches from the canvas' lower-left corner."""

    width: float
    height: float
    boxes: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)  # x0, y0, x1, y1
    texts: dict[str, list[tuple[float, float, float, float]]] = field(default_factory=dict)  # text extents
    arrows: list[tuple[str, str, list[tuple[float, float]]]] = field(default_factory=list)  # polyline
    labels: list[tuple[float, float, float, float]] = field(default_factory=list)  # arrow label extents


def _extent(artist, fig) -> tuple[float, float]:
    """Width and height of a text artist in inches."""
    box = artist.get_window_extent(fig.canvas.get_renderer())
    return box.width / fig.dpi, box.height / fig.dpi


def pipeline_diagram(fig: plt.Figure, fontsize: float = 9.0) -> Diagram:
    """Draw the SIE3D data flow on ``fig`` (which it resizes) and return its geometry.

    Column widths and row heights are the largest measured text block in them plus padding; boxes
    are centred in their cell. Arrows: straight ones between grid neighbours, an elbow from
    ``subject`` into ``train`` and the feedback loop ``train`` → ``avatar`` below the third row.
    """
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    sizes, artists = {}, {}
    for name, (title, body, _, _, _) in PIPELINE_BOXES.items():
        t = ax.text(0, 0, title, fontsize=fontsize + 0.5, fontweight="bold", ha="center", va="top")
        b = ax.text(0, 0, body, fontsize=fontsize, ha="center", va="top", linespacing=1.25)
        (tw, th), (bw, bh) = _extent(t, fig), _extent(b, fig)
        sizes[name] = (max(tw, bw) + 2 * _PAD, th + bh + 0.06 + 2 * _PAD)
        artists[name] = (t, b, th)
    n_cols = 1 + max(c for _, _, c, _, _ in PIPELINE_BOXES.values())
    n_rows = 1 + max(r for _, _, _, r, _ in PIPELINE_BOXES.values())
    col_w = [max(w for n, (w, _) in sizes.items() if PIPELINE_BOXES[n][2] == c) for c in range(n_cols)]
    row_h = [max(h for n, (_, h) in sizes.items() if PIPELINE_BOXES[n][3] == r) for r in range(n_rows)]
    margin = 0.08
    width = margin + sum(col_w) + _GAP * (n_cols - 1) + _LOOP + 0.1 + margin
    loop_lane = 0.25  # extra room between rows 2 and 3: the feedback arrow and its label run there
    height = margin + sum(row_h) + _GAP * (n_rows - 1) + loop_lane + margin
    fig.set_size_inches(width, height)
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    col_x = [margin + sum(col_w[:c]) + _GAP * c + col_w[c] / 2 for c in range(n_cols)]
    row_y, y = [], height - margin
    for r in range(n_rows):
        y -= (loop_lane if r == 3 else 0)
        row_y.append(y - row_h[r] / 2)
        y -= row_h[r] + _GAP
    diagram = Diagram(width, height)
    for name, (_, _, c, r, colour) in PIPELINE_BOXES.items():
        w, h = sizes[name]
        x0, y0 = col_x[c] - w / 2, row_y[r] - h / 2
        diagram.boxes[name] = (x0, y0, x0 + w, y0 + h)
        ax.add_patch(FancyBboxPatch((x0, y0), w, h, boxstyle="round,pad=0,rounding_size=0.06",
                                    facecolor=colour, edgecolor="#555555", linewidth=0.9))
        title, body, title_h = artists[name]
        title.set_position((col_x[c], y0 + h - _PAD))
        body.set_position((col_x[c], y0 + h - _PAD - title_h - 0.06))
    fig.canvas.draw()
    to_inches = ax.transData.inverted()
    for name, (title, body, _) in artists.items():
        extents = []
        for artist in (title, body):
            (ex0, ey0), (ex1, ey1) = to_inches.transform(artist.get_window_extent(fig.canvas.get_renderer()))
            extents.append((ex0, ey0, ex1, ey1))
        diagram.texts[name] = extents

    def centre(name):
        x0, y0, x1, y1 = diagram.boxes[name]
        return (x0 + x1) / 2, (y0 + y1) / 2

    def draw(a, b, points, label="", label_side="right"):
        path = MplPath(points, [MplPath.MOVETO] + [MplPath.LINETO] * (len(points) - 1))
        ax.add_patch(FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=11, color="#333333",
                                     linewidth=1.0, shrinkA=0, shrinkB=0))
        diagram.arrows.append((a, b, [tuple(p) for p in points]))
        if label:
            (xa, ya), (xb, yb) = points[-2], points[-1]
            mx, my = (xa + xb) / 2, (ya + yb) / 2
            t = ax.text(mx + 0.05, my, label, fontsize=fontsize - 0.5, style="italic", ha="left", va="center")
            fig.canvas.draw()
            (lx0, ly0), (lx1, ly1) = to_inches.transform(t.get_window_extent(fig.canvas.get_renderer()))
            diagram.labels.append((lx0, ly0, lx1, ly1))

    for a, b, label in PIPELINE_ARROWS:
        (ax_, ay), (bx, by) = centre(a), centre(b)
        A, B = diagram.boxes[a], diagram.boxes[b]
        if PIPELINE_BOXES[a][3] == PIPELINE_BOXES[b][3]:  # same row: left box's right edge -> right box
            points = [(A[2], ay), (B[0], ay)] if ax_ < bx else [(A[0], ay), (B[2], ay)]
        else:  # same column
            points = [(ax_, A[1]), (ax_, B[3])] if ay > by else [(ax_, A[3]), (ax_, B[1])]
        draw(a, b, points, label)
    S, T, V = diagram.boxes["subject"], diagram.boxes["train"], diagram.boxes["avatar"]
    tx, _ = centre("train")
    draw("subject", "train", [(S[2], centre("subject")[1]), (tx, centre("subject")[1]), (tx, T[3])])
    right = max(x1 for x0, y0, x1, y1 in diagram.boxes.values()) + _LOOP
    bottom_row2 = min(diagram.boxes[n][1] for n in ("avatar", "render", "emotion", "template"))
    lane_y = bottom_row2 - 0.3
    vx = centre("avatar")[0]
    draw("train", "avatar", [(T[2], centre("train")[1]), (right, centre("train")[1]), (right, lane_y),
                             (vx, lane_y), (vx, V[1])])
    ax.text((vx + right) / 2, lane_y - 0.04, "update Gaussians and coefficients (Adam)",
            fontsize=fontsize - 0.5, style="italic", ha="center", va="top")
    fig.canvas.draw()
    return diagram


def pipeline_figure(fontsize: float = 9.0) -> plt.Figure:
    """The SIE3D data flow (paper Fig. 1 redrawn with the package's module names; numbers are the paper's
    equations), sized to its text."""
    fig = plt.figure(figsize=(8, 5))
    pipeline_diagram(fig, fontsize=fontsize)
    return fig


def image_row(images, titles, suptitle: str | None = None, panel_inches: float = 2.3,
              fontsize: float = 11.0) -> plt.Figure:
    """One row of image panels (``images``: ``[H, W, 3]`` arrays), each titled at a readable size.

    Raises:
        ValueError: a different number of images and titles, or none.
    """
    if len(images) != len(titles) or not images:
        raise ValueError(f"{len(images)} images and {len(titles)} titles: give one title per image, at least one")
    fig, axes = plt.subplots(1, len(images), figsize=(panel_inches * len(images), panel_inches + 0.5), squeeze=False)
    for ax, image, title in zip(axes[0], images, titles):
        ax.imshow(image)
        ax.set_axis_off()
        ax.set_title(title, fontsize=fontsize)
    if suptitle:
        fig.suptitle(suptitle, fontsize=fontsize - 1)
    return fig
