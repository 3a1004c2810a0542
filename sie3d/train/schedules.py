"""Loss-weight schedules (pure functions of the iteration); learning rates decay in ``sie3d.avatar.gaussians``."""

from __future__ import annotations


def piecewise_linear(points: list[list[float]], step: int) -> float:
    """Value of the piecewise-linear schedule through ``[[iteration, value], ...]`` at ``step``.

    Constant before the first and after the last point; points must be sorted by iteration.
    """
    if not points:
        raise ValueError("a schedule needs at least one [iteration, value] point")
    if any(b[0] < a[0] for a, b in zip(points, points[1:])):
        raise ValueError(f"schedule points must be sorted by iteration: {points}")
    if step <= points[0][0]:
        return float(points[0][1])
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if step <= x1:
            return float(y0 + (y1 - y0) * (step - x0) / (x1 - x0)) if x1 > x0 else float(y1)
    return float(points[-1][1])
