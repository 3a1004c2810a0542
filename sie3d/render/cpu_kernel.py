"""The compiled CPU rasterizer: C++ projection and tiled compositing with their backward passes.

Same contract and conventions as :func:`sie3d.render.rasterize.project_gaussians` and
:func:`~sie3d.render.rasterize.composite_tiled` (gsplat's), the same thresholds (passed from
:mod:`sie3d.render.rasterize`), and the same results up to float rounding. The kernels are in
``csrc/`` (``project.cpp``, ``composite.cpp``); they run on ``torch.get_num_threads()`` threads
through ``at::parallel_for`` (OpenMP, the runtime torch itself uses).

The extension is compiled on first use (never at import; about a minute of one core) with
``torch.utils.cpp_extension`` in a private temporary folder, then moved to
``~/.cache/sie3d/kernels/sie3d_cpu_raster_<key>.so`` (see :func:`kernel_path`), where the key hashes
the sources, the flags, the compiler, torch and Python: later processes load that file in
milliseconds, concurrent first builds do not collide, and a killed build leaves no lock behind.
Compiled for the baseline instruction set of the machine's compiler (no ``-march=native``), so a
cache shared between machines stays valid. :func:`load_kernel` never raises: when the build fails it
returns None and :func:`kernel_error` says why (the renderer then falls back to the PyTorch path).

Cameras get no gradient on this path (``viewmats`` and ``Ks`` are constants, as in training).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from .rasterize import (ALPHA_MAX, ALPHA_THRESHOLD, EPS2D, MAX_EXTEND, SIGMA_MAX, TRANSMITTANCE_MIN, Projection)

CSRC = Path(__file__).parent / "csrc"
SOURCES = ("project.cpp", "composite.cpp", "bindings.cpp")
HEADERS = ("raster.h",)
CFLAGS = ("-O3", "-fopenmp", "-Wno-psabi")  # OpenMP: at::parallel_for is serial without it; torch ships the libgomp it links
LDFLAGS = ("-fopenmp",)
_RULE = [ALPHA_THRESHOLD, ALPHA_MAX, TRANSMITTANCE_MIN, SIGMA_MAX]

_state: dict = {}  # "module" (the loaded extension or None) and "error" once load_kernel has run


def _compiler() -> str:
    return os.environ.get("CXX", "c++")


def build_key() -> str:
    """12 hex digits identifying a build: sources, flags, compiler, torch and Python versions."""
    h = hashlib.sha256()
    for name in SOURCES + HEADERS:
        h.update(name.encode() + b"\0" + (CSRC / name).read_bytes())
    h.update(repr((CFLAGS, LDFLAGS, _compiler(), torch.__version__, sys.version_info[:2])).encode())
    return h.hexdigest()[:12]


def kernel_path() -> Path:
    """Where the compiled extension is cached: ``$SIE3D_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/sie3d/kernels``
    (``~/.cache/sie3d/kernels``), not under ``$SIE3D_HOME``, so a temporary model cache does not rebuild it."""
    if os.environ.get("SIE3D_KERNEL_CACHE"):
        root = Path(os.environ["SIE3D_KERNEL_CACHE"]).expanduser()
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "sie3d" / "kernels"
    return root / f"sie3d_cpu_raster_{build_key()}.so"


def _import(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(name: str, target: Path) -> None:
    from torch.utils import cpp_extension

    if shutil.which(_compiler()) is None:
        raise RuntimeError(f"no C++ compiler: '{_compiler()}' is not on PATH (set CXX or install g++)")
    path = os.environ.get("PATH", "")
    try:  # the ninja wheel (a dependency) puts its binary next to the interpreter, maybe not on PATH
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + path
    except ImportError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    build_dir = tempfile.mkdtemp(prefix=f"{name}-", dir=target.parent)
    try:
        cpp_extension.load(name, [str(CSRC / s) for s in SOURCES], extra_cflags=list(CFLAGS),
                           extra_ldflags=list(LDFLAGS), extra_include_paths=[str(CSRC)], build_directory=build_dir,
                           verbose=False)
        os.replace(Path(build_dir) / f"{name}.so", target)  # atomic: a concurrent build just overwrites
    finally:
        os.environ["PATH"] = path
        shutil.rmtree(build_dir, ignore_errors=True)


def load_kernel():
    """The compiled extension, building it on first use; None (see :func:`kernel_error`) if it cannot be built."""
    if "module" not in _state:
        target = kernel_path()
        name = target.stem
        try:
            if not target.exists():
                _build(name, target)
            _state["module"], _state["error"] = _import(name, target), None
        except Exception as exc:  # any build or load failure means: use the PyTorch path
            _state["module"], _state["error"] = None, _summary(exc)
    return _state["module"]


def _summary(exc: Exception) -> str:
    """The exception's type and its compiler error lines (or its last lines), at most ~600 characters."""
    lines = str(exc).strip().splitlines()
    errors = [line for line in lines if "error" in line.lower()] or lines[-3:]
    return f"{type(exc).__name__}: {' | '.join(errors)}"[:600]


def kernel_error() -> str | None:
    """Why :func:`load_kernel` returned None (None if it has not run or succeeded)."""
    return _state.get("error")


def reset() -> None:
    """Forget the load attempt (tests; a changed ``CXX`` or ``SIE3D_HOME``)."""
    _state.clear()


def _kernel():
    module = load_kernel()
    if module is None:
        raise RuntimeError(f"the compiled CPU rasterizer is not available: {kernel_error()}")
    return module


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, far_plane, eps2d):
        out = _kernel().project_forward(means, quats, scales, opacities, viewmats, Ks, width, height, near_plane,
                                        far_plane, eps2d, ALPHA_THRESHOLD, MAX_EXTEND)
        ctx.save_for_backward(means, quats, scales, viewmats, Ks)
        ctx.args = (width, height, near_plane, far_plane, eps2d)
        ctx.mark_non_differentiable(*out[3:])
        return tuple(out)

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_depths, *_):
        means, quats, scales, viewmats, Ks = ctx.saved_tensors
        v_means, v_quats, v_scales = _kernel().project_backward(
            means, quats, scales, viewmats, Ks, *ctx.args, v_means2d.contiguous(), v_conics.contiguous(),
            v_depths.contiguous())
        return v_means, v_quats, v_scales, None, None, None, None, None, None, None, None


def project_gaussians_compiled(means, quats, scales, opacities, viewmats, Ks, width: int, height: int,
                               near_plane: float = 0.01, far_plane: float = 1e10, eps2d: float = EPS2D) -> Projection:
    """:func:`sie3d.render.rasterize.project_gaussians` in C++ (no gradient to ``viewmats``, ``Ks``, ``opacities``;
    the returned ``opacities`` carry the opacities' graph to the compositor)."""
    dtype = means.dtype
    args = [t.contiguous() for t in (means, quats, scales, opacities.detach(), viewmats.detach().to(dtype),
                                     Ks.detach().to(dtype))]
    means2d, conics, depths, radii, extents, valid = _Project.apply(*args, int(width), int(height), float(near_plane),
                                                                    float(far_plane), float(eps2d))
    return Projection(means2d=means2d, conics=conics, depths=depths, opacities=opacities.expand_as(depths),
                      radii=radii, extents=extents, valid=valid)


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, depths, extents, valid, width, height, tile_size):
        acc, trans, n_last, offsets, tile_ids = _kernel().composite_forward(
            means2d, conics, opacities, features, depths, extents, valid, width, height, tile_size, _RULE)
        ctx.save_for_backward(means2d, conics, opacities, features, offsets, tile_ids, n_last)
        ctx.args = (width, height, tile_size)
        return acc, trans

    @staticmethod
    def backward(ctx, v_acc, v_trans):
        means2d, conics, opacities, features, offsets, tile_ids, n_last = ctx.saved_tensors
        width, height, tile_size = ctx.args
        v_means2d, v_conics, v_opacities, v_features = _kernel().composite_backward(
            means2d, conics, opacities, features, offsets, tile_ids, n_last, v_acc.contiguous(),
            v_trans.contiguous(), width, height, tile_size, _RULE)
        return v_means2d, v_conics, v_opacities, v_features, None, None, None, None, None, None


def composite_compiled(proj: Projection, features: torch.Tensor, backgrounds: torch.Tensor, width: int, height: int,
                       tile_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sie3d.render.rasterize.composite_tiled` in C++: image [C, H, W, D], alpha [C, H, W, 1].

    Memory: per pixel one transmittance and one list position are kept for the backward pass, which
    replays each pixel's walk; no [pixels x Gaussians] intermediates.
    """
    dtype = features.dtype
    acc, trans = _Composite.apply(proj.means2d.contiguous(), proj.conics.contiguous(),
                                  proj.opacities.to(dtype).contiguous(), features.contiguous(),
                                  proj.depths.detach().contiguous(), proj.extents.detach().to(dtype).contiguous(),
                                  proj.valid.contiguous(), int(width), int(height), int(tile_size))
    trans = trans[..., None]
    return acc + trans * backgrounds[:, None, None, :], 1.0 - trans
