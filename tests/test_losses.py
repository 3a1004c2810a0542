"""Regularisers against hand-computed values."""

import pytest
import torch

from sie3d.train.losses import loss_lap, loss_pos, mean_scale_loss, tv_loss, uniform_laplacian, uniform_neighbours


def test_loss_pos_by_hand():
    points = torch.tensor([[1.0, 0, 0], [0, 2, 0], [5, 5, 5]])
    template = torch.zeros(3, 3)
    mask = torch.tensor([True, True, False])
    assert loss_pos(points, template, mask).item() == pytest.approx((1 + 4) / 2)
    assert loss_pos(points, template, torch.zeros(3, dtype=torch.bool)).item() == 0
    with pytest.raises(ValueError, match="loss_pos"):
        loss_pos(points, template[:2], mask)


def test_uniform_neighbours_of_two_triangles_and_the_cap():
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    table = uniform_neighbours(faces, 5, max_neighbours=4)
    assert table.tolist() == [[1, 2, 3, -1], [0, 2, -1, -1], [0, 1, 3, -1], [0, 2, -1, -1], [-1, -1, -1, -1]]
    fan = torch.tensor([[0, i, i + 1] for i in range(1, 13)])  # vertex 0 has 13 neighbours
    capped = uniform_neighbours(fan, 14, max_neighbours=10)
    assert capped[0].tolist() == list(range(1, 11))


def test_uniform_laplacian_and_loss_lap_by_hand():
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    nb = uniform_neighbours(faces, 4)
    lap = uniform_laplacian(v, nb)
    assert torch.allclose(lap[0], v[0] - (v[1] + v[2] + v[3]) / 3)
    assert torch.allclose(lap[1], v[1] - (v[0] + v[2]) / 2)
    assert loss_lap(v + torch.tensor([3.0, -1, 2]), v, nb).item() == pytest.approx(0.0, abs=1e-12)  # translation
    moved = v.clone()
    moved[0, 2] = 1.0  # lift one vertex by 1 along z
    # L changes: vertex 0 by +1, vertices 1, 2, 3 by -1/2, -1/3, -1/2 (their mean includes vertex 0)
    expected = (1 + 0.25 + 1 / 9 + 0.25) / 4
    assert loss_lap(moved, v, nb).item() == pytest.approx(expected)


def test_tv_loss_by_hand_and_layouts():
    img = torch.tensor([[0.0, 1.0, 3.0], [0.0, 2.0, 3.0]])[None, None]  # [1, 1, 2, 3]
    dh = torch.tensor([0.0, 1.0, 0.0])  # rows differ by 0, 1, 0
    dw = torch.tensor([1.0, 2.0, 2.0, 1.0])
    expected = (dh ** 2).mean() + (dw ** 2).mean()
    assert tv_loss(img).item() == pytest.approx(expected.item())
    assert tv_loss(img.permute(0, 2, 3, 1), layout="BHWC").item() == pytest.approx(expected.item())
    assert tv_loss(torch.ones(2, 3, 5, 5)).item() == 0
    with pytest.raises(ValueError, match="layout"):
        tv_loss(img, layout="HWC")


def test_mean_scale_loss():
    assert mean_scale_loss(torch.tensor([[1.0, 2, 3], [4, 5, 6]])).item() == pytest.approx(3.5)
