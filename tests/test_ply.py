"""INRIA-layout .ply export / import and the general PLY reader."""

import numpy as np
import pytest
import torch

from sie3d.avatar.ply import load_ply, ply_convention, read_ply, save_ply, splat_property_names
from sie3d.render.splats import SH_C0, Splats, random_splats


def test_round_trip_is_identical(tmp_path):
    splats = random_splats(257, torch.Generator().manual_seed(0))
    splats.opacities[:2] = torch.tensor([1e-4, 0.9999])
    path = save_ply(splats, tmp_path / "a.ply")
    back = load_ply(path)
    assert torch.allclose(back.means, splats.means, atol=0) and torch.allclose(back.colors, splats.colors, atol=1e-6)
    assert torch.allclose(back.scales, splats.scales, rtol=1e-6) and torch.allclose(back.opacities, splats.opacities,
                                                                                     atol=1e-6)
    q = torch.nn.functional.normalize(splats.quats, dim=-1)
    assert torch.allclose(back.quats, q, atol=1e-7)
    # export -> import is a fixed point up to float32 rounding
    again = load_ply(save_ply(back, tmp_path / "b.ply"))
    for a, b in zip(again._tensors(), back._tensors()):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)


def test_layout_and_stored_encodings(tmp_path):
    splats = Splats(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[2.0, 0.0, 0.0, 0.0]]),
                    torch.tensor([[0.1, 0.2, 0.4]]), torch.tensor([0.75]), torch.tensor([[0.5, 1.0, 0.0]]))
    path = save_ply(splats, tmp_path / "one.ply", convention="y-up")
    header = path.read_bytes().split(b"end_header\n")[0].decode()
    names = [line.split()[-1] for line in header.splitlines() if line.startswith("property")]
    assert names == splat_property_names(True) and len(names) == 62
    assert "format binary_little_endian 1.0" in header and "element vertex 1" in header
    v = read_ply(path)["vertex"]
    assert v["f_dc_0"][0] == 0 and v["f_dc_1"][0] == pytest.approx(0.5 / SH_C0)
    assert v["opacity"][0] == pytest.approx(np.log(3.0))  # logit(0.75)
    assert v["scale_2"][0] == pytest.approx(np.log(0.4)) and v["rot_0"][0] == 1.0
    assert all(v[f"f_rest_{i}"][0] == 0 for i in range(45)) and v["nx"][0] == 0
    short = save_ply(splats, tmp_path / "short.ply", sh_rest=False, convention="y-up")
    assert "f_rest_0" not in read_ply(short)["vertex"]
    assert torch.allclose(load_ply(short).colors, splats.colors)


def test_generic_reader_ascii_and_big_endian(tmp_path):
    ascii_path = tmp_path / "a.ply"
    ascii_path.write_text("ply\nformat ascii 1.0\ncomment hi\nelement vertex 2\nproperty float x\nproperty uchar red\n"
                          "element face 1\nproperty list uchar int vertex_indices\nend_header\n1.5 7\n-2 255\n3 0 1 1\n")
    data = read_ply(ascii_path)
    assert data["vertex"]["x"].tolist() == [1.5, -2.0] and data["vertex"]["red"].tolist() == [7, 255]
    assert [f.tolist() for f in data["face"]["vertex_indices"]] == [[0, 1, 1]]
    be = tmp_path / "b.ply"
    body = np.array([(1.0, 2), (3.0, 4)], dtype=[("x", ">f4"), ("i", ">i4")]).tobytes()
    be.write_bytes(b"ply\nformat binary_big_endian 1.0\nelement vertex 2\nproperty float x\nproperty int i\n"
                   b"end_header\n" + body)
    data = read_ply(be)["vertex"]
    assert data["x"].tolist() == [1.0, 3.0] and data["i"].tolist() == [2, 4]


def test_bad_files(tmp_path):
    (tmp_path / "x.ply").write_text("hello\n")
    with pytest.raises(ValueError, match="not a PLY"):
        read_ply(tmp_path / "x.ply")
    (tmp_path / "pc.ply").write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
                                     "property float z\nend_header\n0 0 0\n")
    with pytest.raises(ValueError, match="missing properties"):
        load_ply(tmp_path / "pc.ply")
    with pytest.raises(FileNotFoundError):
        load_ply(tmp_path / "none.ply")


def _rotation_matrix(wxyz: torch.Tensor) -> torch.Tensor:
    """[N, 3, 3] from unit wxyz quaternions (the textbook formula, independent of the exporter)."""
    w, x, y, z = torch.nn.functional.normalize(wxyz, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).reshape(-1, 3, 3)


def test_default_export_is_the_colmap_y_down_world(tmp_path):
    splats = random_splats(64, torch.Generator().manual_seed(1))
    path = save_ply(splats, tmp_path / "a.ply")
    header = path.read_bytes().split(b"end_header\n")[0].decode()
    assert "comment sie3d convention colmap: x right, y down, z forward" in header
    assert ply_convention(path) == "colmap"
    v = read_ply(path)["vertex"]
    stored = torch.from_numpy(np.stack([v["x"], v["y"], v["z"]], -1))
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # 180 degrees about x
    assert torch.allclose(stored, splats.means @ flip, atol=1e-6)
    quats = torch.from_numpy(np.stack([v[f"rot_{i}"] for i in range(4)], -1))
    # the covariance axes turn with the points: R_stored = R_x(180) @ R
    assert torch.allclose(_rotation_matrix(quats), flip @ _rotation_matrix(splats.quats), atol=1e-5)
    back = load_ply(path)
    assert torch.allclose(back.means, splats.means, atol=1e-6)
    assert torch.allclose(_rotation_matrix(back.quats), _rotation_matrix(splats.quats), atol=1e-5)
    # y-up keeps the world as is; an explicit convention overrides the header
    up = save_ply(splats, tmp_path / "up.ply", convention="y-up")
    assert ply_convention(up) == "y-up" and torch.allclose(load_ply(up).means, splats.means, atol=1e-6)
    assert torch.allclose(load_ply(up, convention="colmap").means, splats.means @ flip, atol=1e-6)
    with pytest.raises(ValueError, match="unknown .ply convention"):
        save_ply(splats, tmp_path / "x.ply", convention="z-up")


def test_foreign_inria_file_is_read_as_colmap(tmp_path):
    names = splat_property_names(False)
    row = np.zeros(1, dtype=[(n, "<f4") for n in names])
    row["y"], row["rot_0"], row["scale_0"] = -0.5, 1.0, np.log(0.1)
    path = tmp_path / "other.ply"
    path.write_bytes(("ply\nformat binary_little_endian 1.0\nelement vertex 1\n"
                      + "".join(f"property float {n}\n" for n in names) + "end_header\n").encode() + row.tobytes())
    assert ply_convention(path) == "colmap"
    assert load_ply(path).means[0].tolist() == [0.0, 0.5, 0.0]  # y-down -0.5 is 0.5 above the origin
