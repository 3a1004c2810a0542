import pytest

from sie3d.schedules import piecewise_linear


def test_piecewise_linear():
    points = [[0, 1.0], [100, 0.0], [200, 0.5]]
    assert piecewise_linear(points, -5) == 1.0
    assert piecewise_linear(points, 50) == pytest.approx(0.5)
    assert piecewise_linear(points, 150) == pytest.approx(0.25)
    assert piecewise_linear(points, 1000) == 0.5
    with pytest.raises(ValueError):
        piecewise_linear([[10, 1], [5, 2]], 0)
