"""``.ply`` files: Gaussian splats in the INRIA 3DGS layout, and a small general PLY reader.

Splat layout (binary little-endian float32, one vertex per Gaussian, world space)::

    x y z  nx ny nz  f_dc_0 f_dc_1 f_dc_2  f_rest_0 .. f_rest_44  opacity  scale_0 scale_1 scale_2  rot_0 .. rot_3

``f_dc`` holds SH degree 0 (colour = 0.5 + C0 * f_dc, C0 = 0.28209...), ``f_rest`` the 45 higher
coefficients of a degree-3 file, written as zeros so viewers expecting degree 3 load it
(``sh_rest=False`` omits them; the loader accepts both and ignores f_rest); ``opacity`` is a logit,
``scale_*`` are natural logs, ``rot_*`` a wxyz quaternion, normals are zero.

Axis convention (stated in the file's header comment, ``comment sie3d convention <name>``):

* ``colmap`` (default): x right, y down, z forward -- the y-down camera world of COLMAP / INRIA 3DGS
  that SuperSplat, Spark and gsplat.js-style viewers expect; our +y-up world rotated 180 degrees about
  x, so a viewer's identity camera sees the face upright and frontal;
* ``y-up``: our world as is (x right, y up, the face looks along +z: three.js / OpenGL, SPZ's RUB).

:func:`load_ply` undoes the convention named in the header; a file without it (another tool's INRIA
``.ply``) is read as ``colmap``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..render.splats import SH_C0, Splats

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
#: number of f_rest coefficients in an SH-degree-3 file
SH_REST_DEGREE3 = 45
#: axis conventions of exported files -> one-line description for the header comment
CONVENTIONS = {
    "colmap": "x right, y down, z forward (COLMAP/INRIA; sie3d's +y-up world rotated 180 deg about x)",
    "y-up": "x right, y up, face looks along +z (sie3d world, three.js/OpenGL)",
}
DEFAULT_CONVENTION = "colmap"


def flip_yz(splats: Splats, inverse: bool = False) -> Splats:
    """The splats rotated 180 degrees about x: (x, y, z) -> (x, -y, -z).

    Maps sie3d's y-up world to the ``colmap`` convention (``inverse``: back). Rotations are
    left-multiplied by the quaternion (0, 1, 0, 0) (wxyz), i.e. (w, x, y, z) -> (-x, w, -z, y), and
    by its inverse (0, -1, 0, 0) on the way back, so a round trip returns the same quaternion, not -q.
    """
    q = splats.quats
    s = -1.0 if inverse else 1.0
    return Splats(means=splats.means * splats.means.new_tensor([1.0, -1.0, -1.0]),
                  quats=torch.stack([-s * q[:, 1], s * q[:, 0], -s * q[:, 3], s * q[:, 2]], -1),
                  scales=splats.scales, opacities=splats.opacities, colors=splats.colors)


def _check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown .ply convention {convention!r}; choose one of {sorted(CONVENTIONS)}")
    return convention


def _header(fh) -> tuple[str, list[tuple[str, int, list[tuple]]], list[str]]:
    if fh.readline().strip() != b"ply":
        raise ValueError(f"{fh.name}: not a PLY file (missing 'ply' magic)")
    fmt, elements, comments = None, [], []
    while True:
        line = fh.readline()
        if not line:
            raise ValueError(f"{fh.name}: PLY header has no end_header")
        words = line.decode("ascii", errors="replace").split()
        if words and words[0] == "comment":
            comments.append(" ".join(words[1:]))
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property":
            if words[1] == "list":
                elements[-1][2].append((words[4], "list", _PLY_TYPES[words[2]], _PLY_TYPES[words[3]]))
            else:
                elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
        elif words[0] == "end_header":
            break
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"{fh.name}: unsupported PLY format {fmt!r}")
    return fmt, elements, comments


def ply_comments(path: str | Path) -> list[str]:
    """The header's ``comment`` lines (without the keyword)."""
    with Path(path).open("rb") as fh:
        return _header(fh)[2]


def ply_convention(path: str | Path) -> str:
    """The axis convention a splat ``.ply`` declares (``comment sie3d convention NAME``), else ``colmap``."""
    for comment in ply_comments(path):
        words = comment.split()
        if words[:2] == ["sie3d", "convention"] and len(words) > 2:
            return _check_convention(words[2].rstrip(":"))
    return DEFAULT_CONVENTION


def read_ply(path: str | Path) -> dict[str, dict[str, np.ndarray | list]]:
    """All elements of a PLY file: ``{element: {property: values}}`` (list properties as lists of arrays)."""
    path = Path(path)
    with path.open("rb") as fh:
        fmt, elements, _ = _header(fh)
        body = fh.read()
    out: dict[str, dict] = {}
    if fmt == "ascii":
        tokens = body.split()
        pos = 0
        for name, count, props in elements:
            columns: dict[str, list] = {p[0]: [] for p in props}
            for _ in range(count):
                for prop in props:
                    if prop[1] == "list":
                        n = int(tokens[pos])
                        columns[prop[0]].append(np.array(tokens[pos + 1:pos + 1 + n], dtype=prop[3]))
                        pos += 1 + n
                    else:
                        columns[prop[0]].append(tokens[pos])
                        pos += 1
            out[name] = {p[0]: (columns[p[0]] if p[1] == "list" else np.array(columns[p[0]], dtype=p[1]))
                         for p in props}
        return out
    endian = "<" if fmt == "binary_little_endian" else ">"
    offset = 0
    for name, count, props in elements:
        if all(p[1] != "list" for p in props):
            dtype = np.dtype([(p[0], endian + p[1]) for p in props])
            data = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
            offset += dtype.itemsize * count
            out[name] = {p[0]: data[p[0]].astype(p[1]) for p in props}
            continue
        columns = {p[0]: [] for p in props}
        for _ in range(count):
            for prop in props:
                if prop[1] == "list":
                    n_type, v_type = np.dtype(endian + prop[2]), np.dtype(endian + prop[3])
                    n = int(np.frombuffer(body, n_type, 1, offset)[0])
                    offset += n_type.itemsize
                    columns[prop[0]].append(np.frombuffer(body, v_type, n, offset).astype(prop[3]))
                    offset += v_type.itemsize * n
                else:
                    t = np.dtype(endian + prop[1])
                    columns[prop[0]].append(np.frombuffer(body, t, 1, offset)[0])
                    offset += t.itemsize
        out[name] = {p[0]: (columns[p[0]] if p[1] == "list" else np.array(columns[p[0]], dtype=p[1]))
                     for p in props}
    return out


def splat_property_names(sh_rest: bool = True) -> list[str]:
    rest = [f"f_rest_{i}" for i in range(SH_REST_DEGREE3)] if sh_rest else []
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + rest + ["opacity"]
            + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)])


def save_ply(splats: Splats, path: str | Path, sh_rest: bool = True, convention: str = DEFAULT_CONVENTION) -> Path:
    """Write world-space (y-up) splats as an INRIA-layout binary ``.ply`` in ``convention``
    (``colmap``: y down, what 3DGS viewers expect; ``y-up``: as is). See the module docstring."""
    s = splats.detach().to("cpu", torch.float64)
    if _check_convention(convention) == "colmap":
        s = flip_yz(s)
    n = len(s)
    opac = s.opacities.clamp(1e-7, 1 - 1e-7)
    columns = {
        "x": s.means[:, 0], "y": s.means[:, 1], "z": s.means[:, 2],
        "opacity": torch.log(opac / (1 - opac)),
    }
    for i in range(3):
        columns[f"f_dc_{i}"] = (s.colors[:, i] - 0.5) / SH_C0
        columns[f"scale_{i}"] = torch.log(s.scales[:, i])
    quats = torch.nn.functional.normalize(s.quats, dim=-1)
    for i in range(4):
        columns[f"rot_{i}"] = quats[:, i]
    names = splat_property_names(sh_rest)
    data = np.zeros(n, dtype=[(name, "<f4") for name in names])  # normals and f_rest stay zero
    for name, value in columns.items():
        data[name] = value.numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ["ply", "format binary_little_endian 1.0", "comment sie3d Gaussian splats (INRIA layout, SH degree 0)",
              f"comment sie3d convention {convention}: {CONVENTIONS[convention]}",
              f"element vertex {n}"] + [f"property float {name}" for name in names] + ["end_header"]
    with path.open("wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(data.tobytes())
    return path


def load_ply(path: str | Path, convention: str | None = None) -> Splats:
    """Splats in sie3d's y-up world from an INRIA-layout ``.ply`` (ours or another 3DGS tool's; SH
    beyond degree 0 is ignored). ``convention`` overrides the one the header declares (see
    :func:`ply_convention`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"splat file not found: {path}")
    elements = read_ply(path)
    v = elements.get("vertex")
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"] + [f"scale_{i}" for i in range(3)] + [
        f"rot_{i}" for i in range(4)]
    missing = [name for name in required if v is None or name not in v]
    if missing:
        raise ValueError(f"{path}: not a Gaussian-splat .ply (INRIA layout); missing properties {missing}")

    def col(*names):
        return torch.from_numpy(np.stack([np.asarray(v[name], dtype=np.float32) for name in names], -1))

    splats = Splats(
        means=col("x", "y", "z"),
        quats=col("rot_0", "rot_1", "rot_2", "rot_3"),
        scales=torch.exp(col("scale_0", "scale_1", "scale_2")),
        opacities=torch.sigmoid(col("opacity")[:, 0]),
        colors=(0.5 + SH_C0 * col("f_dc_0", "f_dc_1", "f_dc_2")).clamp(0.0, 1.0),
    )
    convention = _check_convention(convention) if convention else ply_convention(path)
    return flip_yz(splats, inverse=True) if convention == "colmap" else splats
