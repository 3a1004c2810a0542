"""Head templates from files: any ``.obj``/``.ply`` mesh (normalised, face semantics estimated or read
from a ``<mesh>.landmarks.json`` sidecar) or a user's FLAME model (read by a restricted unpickler,
without chumpy), and :func:`load_template`, which picks the template that ``models.template`` names.
FLAME is licence-gated: it is never shipped or downloaded.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import torch

from .builtin_head import builtin_head
from .template import FLAME_SHAPE_COMPONENTS, NORMALIZED_TOP, NORMALIZED_WIDTH, HeadTemplate


def normalize_head(vertices: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Scale a y-up, +z-facing head mesh to our units; returns (vertices, scale factor).

    The x extent becomes :data:`NORMALIZED_WIDTH`, the top of the mesh sits at
    :data:`NORMALIZED_TOP`, and the mesh is centred in x and z.
    """
    lo, hi = vertices.min(0).values, vertices.max(0).values
    width = float(hi[0] - lo[0])
    if width <= 0:
        raise ValueError("the mesh has no extent along x; is it a y-up head mesh?")
    scale = NORMALIZED_WIDTH / width
    shift = torch.stack([-(lo[0] + hi[0]) / 2, -hi[1], -(lo[2] + hi[2]) / 2]) * scale
    shift[1] += NORMALIZED_TOP
    return vertices * scale + shift, scale


def estimate_face_semantics(vertices: torch.Tensor) -> tuple[torch.Tensor, dict[str, int]]:
    """Face-region mask and approximate landmarks of a normalised head from its shape alone.

    The nose tip is the most forward vertex near the midline in the upper two thirds; the other
    landmarks are the front-most vertices nearest to average facial proportions measured from it.
    Give exact ones in a ``<mesh>.landmarks.json`` sidecar when they matter.
    """
    v = vertices
    x, y, z = v.unbind(-1)
    top, bottom = float(y.max()), float(y.min())
    candidates = (x.abs() < 0.1) & (y > bottom + 0.3 * (top - bottom))
    if not candidates.any():  # not a head-like mesh: take the most forward vertex
        candidates = torch.ones_like(candidates)
    nose = int(torch.nonzero(candidates).squeeze(-1)[torch.argmax(z[candidates])])
    nx, ny = float(x[nose]), float(y[nose])
    front = z > float(z[nose]) - 0.6

    def nearest(dx: float, dy: float) -> int:
        d = (x - nx - dx) ** 2 + (y - ny - dy) ** 2 + 1e3 * (~front).float()
        return int(torch.argmin(d))

    landmarks = {
        "nose_tip": nose, "left_eye": nearest(0.3, 0.27), "right_eye": nearest(-0.3, 0.27),
        "mouth_left": nearest(0.2, -0.33), "mouth_right": nearest(-0.2, -0.33),
        "mouth_top": nearest(0.0, -0.26), "mouth_bottom": nearest(0.0, -0.42),
        "left_brow_inner": nearest(0.12, 0.43), "right_brow_inner": nearest(-0.12, 0.43),
        "chin": nearest(0.0, -0.65),
    }
    region = front & (z > 0) & (((x - nx) / 0.6) ** 2 + ((y - ny + 0.03) / 0.78) ** 2 <= 1.0)
    return region, landmarks


def _apply_sidecar(path: Path, region: torch.Tensor, landmarks: dict[str, int]):
    sidecar = path.with_name(path.name + ".landmarks.json")
    if not sidecar.is_file():
        return region, landmarks
    data = json.loads(sidecar.read_text())
    landmarks = {**landmarks, **{k: int(v) for k, v in data.get("landmarks", {}).items()}}
    if "face_region" in data:
        region = torch.zeros_like(region)
        region[torch.as_tensor(data["face_region"], dtype=torch.long, device=region.device)] = True
    return region, landmarks


def read_obj(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices [V, 3] and triangles [F, 3] of a Wavefront .obj (polygons are fan-triangulated)."""
    vertices, faces = [], []
    for line_no, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            vertices.append([float(p) for p in parts[1:4]])
        elif parts[0] == "f":
            ids = []
            for token in parts[1:]:
                i = int(token.split("/")[0])
                ids.append(i - 1 if i > 0 else len(vertices) + i)
            if len(ids) < 3:
                raise ValueError(f"{path}:{line_no}: a face needs at least 3 vertices")
            faces += [[ids[0], ids[j], ids[j + 1]] for j in range(1, len(ids) - 1)]
    if not vertices or not faces:
        raise ValueError(f"{path}: no vertices or faces found; is it a triangle mesh .obj?")
    return np.array(vertices, dtype=np.float64), np.array(faces, dtype=np.int64)


def load_mesh_template(path: str | Path) -> HeadTemplate:
    """A template from an ``.obj`` or ``.ply`` head mesh (y up, facing +z), without blendshapes."""
    from .ply import read_ply  # noqa: PLC0415 (the .ply reader is shared with the splat exporter)

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"template mesh not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".obj":
        vertices, faces = read_obj(path)
    elif suffix == ".ply":
        elements = read_ply(path)
        if "face" not in elements:
            raise ValueError(f"{path}: a .ply template needs a face element (this looks like a point cloud)")
        v = elements["vertex"]
        vertices = np.stack([v["x"], v["y"], v["z"]], -1).astype(np.float64)
        key = "vertex_indices" if "vertex_indices" in elements["face"] else "vertex_index"
        faces = np.array([[p[0], p[j], p[j + 1]] for p in elements["face"][key] for j in range(1, len(p) - 1)])
    else:
        raise ValueError(f"template mesh {path} must be .obj or .ply")
    verts, _ = normalize_head(torch.tensor(vertices, dtype=torch.float32, device="cpu"))
    region, landmarks = _apply_sidecar(path, *estimate_face_semantics(verts))
    return HeadTemplate(vertices=verts, faces=torch.as_tensor(faces, dtype=torch.long, device=verts.device),
                        face_region=region, landmarks=landmarks, expression_names=[],
                        expression_basis=torch.zeros(0, len(verts), 3, device=verts.device), name=str(path))


# --------------------------------------------------------------------------- FLAME


class _ChumpyArray:
    """Stands in for ``chumpy.Ch`` objects while unpickling: only their ``x`` array is kept."""

    def __setstate__(self, state):
        self.state = state


class _SparseMatrix:
    """Stands in for scipy sparse matrices while unpickling (FLAME's joint regressor; unused here)."""

    def __setstate__(self, state):
        self.state = state


def _numpy_multiarray():
    if hasattr(np, "_core"):  # numpy >= 2
        return np._core.multiarray
    return np.core.multiarray  # pragma: no cover - numpy 1.x


def _safe_reconstructor(cls, base, state):
    if cls not in (_ChumpyArray, _SparseMatrix):
        raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r}")
    return cls.__new__(cls)


class _FlameUnpickler(pickle.Unpickler):
    """Loads FLAME's Python-2 pickle without chumpy and without running code from the file.

    Only numpy array reconstruction, a few inert builtins and stand-ins for chumpy / scipy objects
    are resolvable; any other global (e.g. ``os.system``) raises :class:`pickle.UnpicklingError`.
    """

    def find_class(self, module: str, name: str):
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
            return getattr(_numpy_multiarray(), name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return _safe_reconstructor
        if module == "_codecs" and name == "encode":  # bytes written by Python 3 at protocol 2
            return __import__("codecs").encode
        if module in ("__builtin__", "builtins") and name in ("object", "set", "frozenset", "complex", "slice"):
            return __import__("builtins").__dict__[name]
        if module.split(".")[0] == "chumpy":
            return _ChumpyArray
        if module.startswith("scipy.sparse"):
            return _SparseMatrix
        raise pickle.UnpicklingError(
            f"FLAME model refers to {module}.{name}, which a FLAME model does not need; refusing to load it")


def _plain(value):
    if isinstance(value, _ChumpyArray):
        state = value.state
        if isinstance(state, dict) and "x" in state:
            return np.asarray(state["x"])
        raise ValueError("a chumpy object in the FLAME file has no array ('x'); re-export the model as .npz")
    return value


def read_flame(path: str | Path) -> dict[str, np.ndarray]:
    """``v_template`` [V, 3], ``f`` [F, 3] and ``shapedirs`` [V, 3, S] of a FLAME model (.pkl or .npz)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"FLAME model not found: {path}. FLAME is licence-gated: download the generic model yourself "
            "(https://flame.is.tue.mpg.de) and set models.flame_model_path, or use models.template=builtin")
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as data:
            raw = {k: data[k] for k in data.files}
    else:
        with path.open("rb") as fh:
            raw = _FlameUnpickler(fh, encoding="latin1").load()
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a FLAME model dictionary, got {type(raw).__name__}")
        raw = {k: _plain(v) for k, v in raw.items()}
    missing = [k for k in ("v_template", "f", "shapedirs") if k not in raw]
    if missing:
        raise ValueError(f"{path}: not a FLAME model, missing {missing}")
    return {"v_template": np.asarray(raw["v_template"], dtype=np.float64),
            "f": np.asarray(raw["f"], dtype=np.int64), "shapedirs": np.asarray(raw["shapedirs"], dtype=np.float64)}


def load_flame_template(path: str | Path, max_expressions: int = 100) -> HeadTemplate:
    """A template from a user-supplied FLAME model, with its expression components as the basis."""
    model = read_flame(path)
    verts, scale = normalize_head(torch.tensor(model["v_template"], dtype=torch.float32, device="cpu"))
    shapedirs = model["shapedirs"]
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != model["v_template"].shape:
        raise ValueError(f"{path}: shapedirs must be [V, 3, S], got {list(shapedirs.shape)}")
    expr = shapedirs[:, :, FLAME_SHAPE_COMPONENTS:FLAME_SHAPE_COMPONENTS + max_expressions]
    basis = torch.tensor(expr.transpose(2, 0, 1) * scale, dtype=torch.float32, device=verts.device)
    region, landmarks = _apply_sidecar(Path(path), *estimate_face_semantics(verts))
    return HeadTemplate(vertices=verts, faces=torch.as_tensor(model["f"], device=verts.device), face_region=region,
                        landmarks=landmarks, expression_names=[f"flame_expr_{i:02d}" for i in range(basis.shape[0])],
                        expression_basis=basis, name=f"FLAME ({path})")


def load_template(models_cfg) -> HeadTemplate:
    """Dispatch on ``models.template``: ``builtin`` | ``flame`` (``models.flame_model_path``) | a mesh path."""
    choice = models_cfg.template
    if choice == "builtin":
        return builtin_head()
    if choice == "flame":
        if not models_cfg.flame_model_path:
            raise ValueError("models.template=flame needs models.flame_model_path (your FLAME generic model .pkl "
                             "or .npz; FLAME is licence-gated and never downloaded), or use models.template=builtin")
        return load_flame_template(models_cfg.flame_model_path)
    return load_mesh_template(choice)
