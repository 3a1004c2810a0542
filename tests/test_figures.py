"""The pipeline diagram: nothing clipped, no text outside its box, no arrow through a box; image rows."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sie3d.render.figures import PIPELINE_BOXES, image_row, pipeline_diagram  # noqa: E402

EPS = 1e-6


def _overlap(a, b, margin=0.0):
    return a[0] < b[2] - margin and b[0] < a[2] - margin and a[1] < b[3] - margin and b[1] < a[3] - margin


def _segment_hits_box(p, q, box):
    """An axis-parallel segment crosses the box's interior (touching an edge does not count)."""
    x0, y0, x1, y1 = box
    (px, py), (qx, qy) = p, q
    lo_x, hi_x, lo_y, hi_y = min(px, qx), max(px, qx), min(py, qy), max(py, qy)
    return lo_x < x1 - EPS and hi_x > x0 + EPS and lo_y < y1 - EPS and hi_y > y0 + EPS


def test_layout_is_clean():
    fig = plt.figure()
    d = pipeline_diagram(fig)
    assert set(d.boxes) == set(PIPELINE_BOXES)
    titles = " ".join(t for t, *_ in PIPELINE_BOXES.values())
    for package in ("face", "diffusion", "avatar", "render", "train", "evaluation", "subject", "generate"):
        assert package in titles
    canvas = (0.0, 0.0, d.width, d.height)
    names = list(d.boxes)
    for i, a in enumerate(names):
        box = d.boxes[a]
        assert canvas[0] <= box[0] and box[2] <= canvas[2] and canvas[1] <= box[1] and box[3] <= canvas[3]
        for text in d.texts[a]:  # title and body inside the box
            assert box[0] < text[0] and text[2] < box[2] and box[1] < text[1] and text[3] < box[3], a
        for b in names[i + 1:]:
            assert not _overlap(box, d.boxes[b]), (a, b)
    assert len(d.arrows) >= 12
    for a, b, points in d.arrows:
        assert all(p[0] == q[0] or p[1] == q[1] for p, q in zip(points, points[1:]))  # axis-parallel
        assert all(0 <= x <= d.width and 0 <= y <= d.height for x, y in points)
        for name, box in d.boxes.items():
            for p, q in zip(points, points[1:]):
                assert not _segment_hits_box(p, q, box), (a, b, name)
    for label in d.labels:
        assert not any(_overlap(label, box) for box in d.boxes.values())
    plt.close(fig)


def test_image_row_titles_each_panel_and_refuses_a_missing_title():
    images = [np.full((8, 8, 3), v, dtype=np.uint8) for v in (0, 128, 255)]
    fig = image_row(images, ["a", "b", "c"], "row")
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["a", "b", "c"]
    assert [int(ax.images[0].get_array()[0, 0, 0]) for ax in panels] == [0, 128, 255]
    assert fig._suptitle.get_text() == "row"
    plt.close(fig)
    with pytest.raises(ValueError, match="one title per image"):
        image_row(images, ["a", "b"])
