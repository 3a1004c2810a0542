import pytest

from sie3d.train.schedules import piecewise_linear


def test_piecewise_linear():
    points = [[0, 1.0], [100, 0.0], [200, 0.5]]
    assert piecewise_linear(points, -5) == 1.0
    assert piecewise_linear(points, 50) == pytest.approx(0.5)
    assert piecewise_linear(points, 150) == pytest.approx(0.25)
    assert piecewise_linear(points, 1000) == 0.5
    with pytest.raises(ValueError):
        piecewise_linear([[10, 1], [5, 2]], 0)


def test_exponential_learning_rate_decay():
    import math

    from sie3d.avatar.gaussians import exponential_lr

    assert exponential_lr(1.4e-4, 1.4e-6, 0.0) == pytest.approx(1.4e-4)
    assert exponential_lr(1.4e-4, 1.4e-6, 1.0) == pytest.approx(1.4e-6)
    assert exponential_lr(1.4e-4, 1.4e-6, 0.5) == pytest.approx(math.sqrt(1.4e-4 * 1.4e-6))
    assert exponential_lr(0.0175, 0.0175, 0.3) == pytest.approx(0.0175)
