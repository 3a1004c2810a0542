"""Head templates: the built-in head's geometry, semantics and blendshapes; mesh files; FLAME loading."""

import json
import pickle
import sys
import types
from collections import Counter

import numpy as np
import pytest
import torch

from sie3d.avatar.builtin_head import builtin_head
from sie3d.avatar.template import BUILTIN_EXPRESSIONS, HeadTemplate, midpoint_subdivision, signed_volume, subdivide_template
from sie3d.avatar.template_files import load_flame_template, load_mesh_template, load_template, read_flame
from sie3d.config import CameraConfig, ModelsConfig
from sie3d.render.cameras import frontal_camera, project_points


@pytest.fixture(scope="module")
def head():
    return builtin_head()


def edge_counts(faces):
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(dim=1).values
    return Counter(map(tuple, edges.tolist()))


def frontal_px(head, vertices, indices, resolution=512):
    cam = frontal_camera(CameraConfig(), resolution)
    return project_points(vertices[indices], cam)[0]


def test_builtin_head_is_a_closed_outward_mesh_except_the_mouth_slit(head):
    V, F = head.num_vertices, head.faces.shape[0]
    assert head.vertices.dtype == torch.float32 and head.faces.dtype == torch.int64
    assert 5000 < V < 12000 and 10000 < F < 25000
    assert signed_volume(head.vertices, head.faces) > 0
    counts = edge_counts(head.faces)
    assert max(counts.values()) == 2
    boundary = {v for edge, c in counts.items() if c == 1 for v in edge}
    # the only boundary is the slit: the upper-lip vertices and their lower-lip copies, meeting at the corners
    lm = head.landmarks
    assert {lm["lip_inner_top"], lm["lip_inner_bottom"], lm["mouth_left"], lm["mouth_right"]} <= boundary
    lip_line = head.vertices[sorted(boundary)]
    assert (lip_line[:, 1] - head.vertices[lm["lip_inner_top"], 1]).abs().max() < 1e-6
    assert lip_line[:, 0].abs().max() <= head.vertices[lm["mouth_left"], 0] + 1e-6


def test_builtin_head_size_and_framing(head):
    v = head.vertices
    assert abs(v[:, 1].max().item() - 1.0) < 1e-6  # crown
    chin = v[head.landmarks["chin"], 1].item()
    assert 1.8 < 1.0 - chin < 2.1  # about 2 units from crown to chin
    cam = frontal_camera(CameraConfig(), 256)
    head_only = v[v[:, 1] > chin - 0.05]
    uv = project_points(head_only, cam)[0]
    assert uv.min() > 0 and uv.max() < 256  # the whole head (not the neck) is in the evaluation view
    assert 0.5 < (uv[:, 1].max() - uv[:, 1].min()).item() / 256 < 0.75  # and fills it


def test_landmarks_are_anatomically_placed(head):
    p = {k: head.vertices[i] for k, i in head.landmarks.items()}
    for side, sign in (("left", 1), ("right", -1)):
        assert sign * p[f"{side}_eye"][0] > 0.2 and sign * p[f"mouth_{side}"][0] > 0.15
        assert p[f"{side}_eye_top"][1] > p[f"{side}_eye_bottom"][1]
        assert p[f"{side}_brow_inner"][1] > p[f"{side}_eye"][1]
    assert p["left_eye"][1] > p["nose_tip"][1] > p["mouth_top"][1] > p["mouth_bottom"][1] > p["chin"][1]
    front = head.vertices[head.face_region & (head.vertices[:, 1] > -0.5)]
    assert p["nose_tip"][2] == pytest.approx(front[:, 2].max().item(), abs=0.02)  # the most forward point
    assert torch.equal(p["lip_inner_top"], p["lip_inner_bottom"])  # the slit is closed at rest
    assert head.landmarks["lip_inner_top"] != head.landmarks["lip_inner_bottom"]


def test_face_region_covers_the_face_not_the_back(head):
    region = head.face_region
    for name in ("left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right", "chin", "left_brow_inner"):
        assert region[head.landmarks[name]]
    v = head.vertices
    assert not region[v[:, 2] < -0.3].any()  # back of the head
    assert not region[v[:, 1] > 0.7].any()  # top of the cranium
    assert 0.1 < region.float().mean() < 0.5


def test_blendshapes_move_the_right_landmarks_visibly(head):
    assert head.expression_names == list(BUILTIN_EXPRESSIONS)
    lm = head.landmarks
    names = list(lm)
    rest = frontal_px(head, head.vertices, [lm[n] for n in names])

    def moved(expression):
        v = head.deform(head.expression_coefficients(**{expression: 1.0}))
        return {n: d for n, d in zip(names, frontal_px(head, v, [lm[n] for n in names]) - rest)}

    # image coordinates at 512 px: +x right (subject's left), +y down
    d = moved("mouth_open")
    gap = (d["lip_inner_bottom"][1] - d["lip_inner_top"][1]).item()
    assert gap > 20 and d["lip_inner_top"].abs().max() < 1 and d["chin"][1] > 15
    d = moved("smile")
    assert d["mouth_left"][1] < -8 and d["mouth_right"][1] < -8  # corners up
    assert d["mouth_left"][0] > 4 and d["mouth_right"][0] < -4  # and wider
    d = moved("frown")
    assert d["mouth_left"][1] > 8 and d["mouth_right"][1] > 8
    d = moved("lips_pressed")
    assert d["mouth_top"][1] > 3 and d["mouth_bottom"][1] < -3  # lips thinner
    d = moved("brow_raise")
    assert d["left_brow_mid"][1] < -8 and d["right_brow_mid"][1] < -8
    d = moved("brow_furrow")
    assert d["left_brow_inner"][0] < -3 and d["right_brow_inner"][0] > 3 and d["left_brow_inner"][1] > 3
    d = moved("eyes_wide")
    assert d["left_eye_top"][1] < -5 and d["left_eye_bottom"][1] > 2
    for name in BUILTIN_EXPRESSIONS:  # the back of the head never moves
        basis = head.expression_basis[BUILTIN_EXPRESSIONS.index(name)]
        assert basis[head.vertices[:, 2] < -0.4].abs().max() == 0


def test_deform_is_linear_and_differentiable(head):
    coeffs = torch.zeros(len(BUILTIN_EXPRESSIONS), requires_grad=True)
    v = head.deform(coeffs)
    assert torch.equal(v.detach(), head.vertices)
    v[head.landmarks["mouth_left"], 1].backward()
    assert coeffs.grad[BUILTIN_EXPRESSIONS.index("smile")] > 0
    half = head.deform(head.expression_coefficients(smile=0.5))
    full = head.deform(head.expression_coefficients(smile=1.0))
    assert torch.allclose(half - head.vertices, 0.5 * (full - head.vertices), atol=1e-6)
    with pytest.raises(KeyError, match="unknown expression"):
        head.expression_coefficients(wink=1.0)
    with pytest.raises(ValueError, match="coefficients"):
        head.deform(torch.zeros(3))


def test_midpoint_subdivision_counts_and_interpolation(head):
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    new_faces, parents = midpoint_subdivision(faces, 4)
    assert new_faces.shape == (8, 3) and parents.shape == (5, 2)  # 5 distinct edges
    sub, levels = subdivide_template(head, 1)
    V, E = head.num_vertices, levels[0].shape[0]
    assert sub.num_vertices == V + E and sub.faces.shape[0] == 4 * head.faces.shape[0]
    e = levels[0][0]
    assert torch.allclose(sub.vertices[V], 0.5 * (head.vertices[e[0]] + head.vertices[e[1]]))
    assert torch.allclose(sub.expression_basis[:, V], 0.5 * (head.expression_basis[:, e[0]] + head.expression_basis[:, e[1]]))
    assert sub.landmarks == head.landmarks and abs(signed_volume(sub.vertices, sub.faces) - signed_volume(
        head.vertices, head.faces)) < 0.05


CUBE_OBJ = """# unit cube made of quads, y up
v -1 -1 -1\nv 1 -1 -1\nv 1 1 -1\nv -1 1 -1\nv -1 -1 1\nv 1 -1 1\nv 1 1 1\nv -1 1 1
f 1 4 3 2\nf 5 6 7 8\nf 1 2 6 5\nf 2 3 7 6\nf 3 4 8 7\nf 4 1 5/1/1 8//2
"""


def test_obj_mesh_template_is_normalised(tmp_path):
    path = tmp_path / "cube.obj"
    path.write_text(CUBE_OBJ)
    t = load_mesh_template(path)
    assert t.faces.shape == (12, 3) and t.num_expressions == 0 and t.expression_basis.shape == (0, 8, 3)
    assert t.vertices[:, 0].max() - t.vertices[:, 0].min() == pytest.approx(1.5)
    assert t.vertices[:, 1].max() == pytest.approx(1.0) and abs(signed_volume(t.vertices, t.faces)) == pytest.approx(1.5 ** 3)
    assert torch.equal(t.deform(torch.zeros(0)), t.vertices)
    (tmp_path / "cube.obj.landmarks.json").write_text(json.dumps({"landmarks": {"nose_tip": 6}, "face_region": [6, 7]}))
    t = load_mesh_template(path)
    assert t.landmarks["nose_tip"] == 6 and t.face_region.sum() == 2


def test_ply_mesh_template(tmp_path):
    lines = ["ply", "format ascii 1.0", "element vertex 4", "property float x", "property float y", "property float z",
             "element face 2", "property list uchar int vertex_indices", "end_header",
             "0 0 0", "2 0 0", "2 2 0", "0 2 1", "3 0 1 2", "3 0 2 3"]
    path = tmp_path / "m.ply"
    path.write_text("\n".join(lines) + "\n")
    t = load_mesh_template(path)
    assert t.faces.tolist() == [[0, 1, 2], [0, 2, 3]] and t.vertices[:, 0].max() == pytest.approx(0.75)


def test_mesh_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_mesh_template(tmp_path / "missing.obj")
    bad = tmp_path / "points.obj"
    bad.write_text("v 0 0 0\n")
    with pytest.raises(ValueError, match="no vertices or faces"):
        load_mesh_template(bad)
    with pytest.raises(ValueError, match=".obj or .ply"):
        (tmp_path / "m.stl").write_text("solid")
        load_mesh_template(tmp_path / "m.stl")


# --------------------------------------------------------------------------- FLAME without chumpy


def _fake_flame_pickle(path, v, f, shapedirs):
    """Write a pickle laid out like FLAME's (chumpy arrays, a scipy sparse regressor) without those packages."""
    chumpy = types.ModuleType("chumpy")
    chumpy_ch = types.ModuleType("chumpy.ch")
    scipy_csc = types.ModuleType("scipy.sparse.csc")

    class Ch:  # what chumpy pickles: an object whose state holds the array in 'x'
        def __init__(self, x):
            self.x = x

    class csc_matrix:
        def __init__(self):
            self.data, self.indices, self.indptr, self._shape = np.ones(1), np.zeros(1), np.array([0, 1]), (1, 1)

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    csc_matrix.__module__, csc_matrix.__qualname__ = "scipy.sparse.csc", "csc_matrix"
    chumpy_ch.Ch, scipy_csc.csc_matrix = Ch, csc_matrix
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch", "scipy.sparse.csc")}
    sys.modules.update({"chumpy": chumpy, "chumpy.ch": chumpy_ch, "scipy.sparse.csc": scipy_csc})
    try:
        model = {"v_template": Ch(v), "f": f.astype(np.uint32), "shapedirs": Ch(shapedirs),
                 "J_regressor": csc_matrix(), "bs_style": "lbs", "kintree_table": np.zeros((2, 5))}
        path.write_bytes(pickle.dumps(model, protocol=2))
    finally:
        for k, mod in saved.items():
            if mod is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = mod


@pytest.fixture
def fake_flame(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.normal(size=(30, 3)) * np.array([0.08, 0.12, 0.09])  # metres, like FLAME
    f = rng.integers(0, 30, size=(40, 3))
    shapedirs = rng.normal(size=(30, 3, 310)) * 1e-3
    path = tmp_path / "generic_model.pkl"
    _fake_flame_pickle(path, v, f, shapedirs)
    return path, v, f, shapedirs


def test_flame_pickle_loads_without_chumpy(fake_flame):
    path, v, f, shapedirs = fake_flame
    assert "chumpy" not in sys.modules
    raw = read_flame(path)
    assert np.allclose(raw["v_template"], v) and np.array_equal(raw["f"], f)
    t = load_flame_template(path)
    scale = 1.5 / (v[:, 0].max() - v[:, 0].min())
    assert t.expression_names == [f"flame_expr_{i:02d}" for i in range(10)]
    assert torch.allclose(t.expression_basis, torch.tensor(shapedirs[:, :, 300:].transpose(2, 0, 1) * scale,
                                                           dtype=torch.float32))
    coeffs = torch.zeros(10)
    coeffs[3] = 2.0
    assert torch.allclose(t.deform(coeffs) - t.vertices, 2.0 * t.expression_basis[3], atol=1e-6)


def test_flame_npz_and_dispatch(fake_flame, tmp_path):
    _, v, f, shapedirs = fake_flame
    npz = tmp_path / "flame.npz"
    np.savez(npz, v_template=v, f=f, shapedirs=shapedirs)
    assert load_template(ModelsConfig(template="flame", flame_model_path=str(npz))).num_expressions == 10
    assert load_template(ModelsConfig(template="builtin")).name == "builtin"
    with pytest.raises(ValueError, match="flame_model_path"):
        load_template(ModelsConfig(template="flame", flame_model_path=""))
    with pytest.raises(FileNotFoundError, match="licence-gated"):
        read_flame(tmp_path / "nope.pkl")


class _Evil:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_flame_loader_refuses_code_in_the_pickle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": _Evil()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_flame(path)
    assert not (tmp_path / "PWNED").exists()


def test_template_validation():
    with pytest.raises(ValueError, match="outside"):
        HeadTemplate(torch.zeros(3, 3), torch.tensor([[0, 1, 5]]), torch.zeros(3, dtype=torch.bool), {}, [],
                     torch.zeros(0, 3, 3))
    with pytest.raises(ValueError, match="landmark"):
        HeadTemplate(torch.zeros(3, 3), torch.tensor([[0, 1, 2]]), torch.zeros(3, dtype=torch.bool), {"x": 9}, [],
                     torch.zeros(0, 3, 3))
