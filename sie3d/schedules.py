"""Learning-rate and loss-weight schedules (pure functions of the iteration)."""

from __future__ import annotations

import math


def exponential_decay(initial: float, final: float, step: int, total_steps: int) -> float:
    """Log-linear interpolation from ``initial`` (step 0) to ``final`` (step ``total_steps``).

    ``lr(step) = exp((1 - r) ln(initial) + r ln(final))`` with ``r = clamp(step / total_steps, 0, 1)``:
    the exponential decay 3D Gaussian Splatting uses for positions. Equal ends give a constant.
    """
    if initial <= 0 or final <= 0:
        raise ValueError(f"exponential_decay needs positive rates, got {initial} -> {final}")
    r = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return math.exp((1 - r) * math.log(initial) + r * math.log(final))


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
