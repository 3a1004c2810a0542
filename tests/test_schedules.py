import math

import pytest

from sie3d.schedules import exponential_decay, piecewise_linear


def test_exponential_decay_ends_and_midpoint():
    assert exponential_decay(1.4e-4, 1.4e-6, 0, 5000) == pytest.approx(1.4e-4)
    assert exponential_decay(1.4e-4, 1.4e-6, 5000, 5000) == pytest.approx(1.4e-6)
    assert exponential_decay(1.4e-4, 1.4e-6, 2500, 5000) == pytest.approx(math.sqrt(1.4e-4 * 1.4e-6))
    assert exponential_decay(1.4e-4, 1.4e-6, 9999, 5000) == pytest.approx(1.4e-6)  # clamped
    assert exponential_decay(0.0175, 0.0175, 123, 5000) == pytest.approx(0.0175)
    with pytest.raises(ValueError):
        exponential_decay(0.0, 1.0, 1, 10)


def test_piecewise_linear():
    points = [[0, 1.0], [100, 0.0], [200, 0.5]]
    assert piecewise_linear(points, -5) == 1.0
    assert piecewise_linear(points, 50) == pytest.approx(0.5)
    assert piecewise_linear(points, 150) == pytest.approx(0.25)
    assert piecewise_linear(points, 1000) == 0.5
    with pytest.raises(ValueError):
        piecewise_linear([[10, 1], [5, 2]], 0)
