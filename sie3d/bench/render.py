"""``sie3d bench render``: the three CPU rasterizers side by side, forward + backward, time and peak memory.

Contenders: ``dense`` (every Gaussian at every pixel, pixel chunks recomputed in backward: the
reference), ``tiled`` (the PyTorch tiled path, :func:`sie3d.render.rasterize.composite_tiled`) and
``compiled`` (the C++ kernel, :mod:`sie3d.render.cpu_kernel`), each with its own projection.

Scenes (fixed, seeded; N Gaussians in a unit cube centred 3 units in front of a pinhole camera,
random rotations and colours):

* ``head`` (default): log-scales uniform in [ln 0.005, ln 0.03], opacities uniform in [0.1, 0.9],
  field of view 0.6 rad: the scenes on which the CPU rasterizers of other projects were compared;
* ``bench``: :func:`sie3d.render.splats.random_splats` (log-scales in [-3.5, -2.5], opacities in
  [0, 1]), focal 2.5 x width.

The loss is a fixed random weighting of RGB + alpha, so every input gets a gradient. Each
measurement runs in a fresh process with ``--threads`` torch threads after a warm-up pass: the time
is the best of ``--repeats`` passes with default allocator settings; the peak memory comes from a
second process in which glibc returns every allocation over 64 kB at once (see :func:`_in_child`),
as the growth of VmHWM over the resident size just before the measured pass. The dense reference
gets one pass under exact memory accounting, and only while N x pixels <= ``--dense-limit``.
Images and all gradients of the fast paths are compared with the dense reference where it ran,
else with each other. Timings on a shared machine are noisy: read the ratios, measured side by side.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import time
from pathlib import Path

_MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"
DESCRIPTION = "CPU rasterizers (dense, PyTorch tiled, compiled C++) side by side: forward+backward time, peak memory"
SCENES = ("head", "bench")


def add_arguments(parser) -> None:
    parser.add_argument("--scene", choices=SCENES, default="head", help="scene family (see the module docstring)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 50000], help="numbers of Gaussians")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256, 512], help="square image sides")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per measurement (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes of the fast paths (best kept)")
    parser.add_argument("--chunk", type=int, default=32, help="Gaussians per tile per step of the PyTorch tiled path")
    parser.add_argument("--no-dense", action="store_true", help="skip the (slow) dense reference")
    parser.add_argument("--dense-limit", type=float, default=1e9,
                        help="run the dense reference only while Gaussians x pixels is at most this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")


def bench_scene(n: int, resolution: int, seed: int = 0, scene: str = "head"):
    """(splats, viewmats [1, 4, 4], Ks [1, 3, 3], loss weights [1, H, W, 4]) of a benchmark scene."""
    import torch

    from ..render.splats import random_splats

    g = torch.Generator().manual_seed(seed)
    if scene == "head":
        splats = random_splats(n, g, log_scale_range=(math.log(0.005), math.log(0.03)))
        splats.opacities = 0.1 + 0.8 * torch.rand(n, generator=g, device="cpu")
        focal = 0.5 * resolution / math.tan(0.3)
    else:
        splats = random_splats(n, g)
        focal = 2.5 * resolution
    Ks = torch.tensor([[focal, 0.0, resolution / 2], [0.0, focal, resolution / 2], [0.0, 0.0, 1.0]], device="cpu")[None]
    weights = torch.rand(1, resolution, resolution, 4, generator=torch.Generator().manual_seed(seed + 1), device="cpu")
    return splats, torch.eye(4, device="cpu")[None], Ks, weights


def _memory_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current resident size (Linux >= 4.0)
        return True
    except OSError:
        return False


def _measure(method: str, scene: str, n: int, resolution: int, threads: int, repeats: int, chunk: int,
             seed: int) -> dict:
    """Runs in a child process: one scene, warm-up, timed passes; returns times, memory, outputs."""
    import torch

    from ..render import cpu_kernel
    from ..render.rasterize import composite_dense, composite_tiled, project_gaussians

    torch.set_num_threads(threads)
    if method == "compiled" and cpu_kernel.load_kernel() is None:
        return {"error": cpu_kernel.kernel_error()}
    splats, viewmats, Ks, weights = bench_scene(n, resolution, seed, scene)
    inputs = [splats.means, splats.quats, splats.scales, splats.opacities, splats.colors]
    for t in inputs:
        t.requires_grad_(True)
    background = torch.ones(1, 4, device="cpu")
    project = cpu_kernel.project_gaussians_compiled if method == "compiled" else project_gaussians

    def one_pass(size: int = resolution):
        for t in inputs:
            t.grad = None
        proj = project(*inputs[:4], viewmats, Ks * (size / resolution), size, size)
        features = torch.cat([splats.colors[None], proj.depths[..., None]], -1)
        if method == "compiled":
            image, alpha = cpu_kernel.composite_compiled(proj, features, background, size, size)
        elif method == "tiled":
            image, alpha = composite_tiled(proj, features, background, size, size, chunk=chunk)
        else:
            image, alpha = composite_dense(proj, features, background, size, size, use_checkpoint=True)
        w = weights[:, :size, :size]
        loss = (image * w).sum() + (alpha[..., 0] * w[..., 0]).sum()
        loss.backward()
        return image.detach()

    # warm-up (pages in code and thread pools); the dense reference warms up on a small image
    one_pass(16 if method == "dense" else resolution)
    baseline = _memory_kb("VmRSS")
    peak_ok = _reset_peak()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        image = one_pass()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    peak_mb = (_memory_kb("VmHWM") - baseline) / 1024 if peak_ok else float("nan")
    return {"wall": min(walls), "cpu": min(cpus), "peak_mb": peak_mb, "image": image.numpy(),
            "grads": [t.grad.numpy() for t in inputs]}


def _in_child(*args, exact_memory: bool) -> dict:
    """Run :func:`_measure` in a fresh interpreter. With ``exact_memory``, glibc serves every
    allocation over 64 kB with mmap and returns it on free, so the resident size follows live
    memory (without it, freed heap is reused silently and peaks are meaningless); that costs page
    faults, so the reported times come from a run without it."""
    settings = {_MMAP_ENV: "65536" if exact_memory else None,
                # on a shared machine, OpenMP threads spinning while a sibling is descheduled burn the cores
                "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    previous = {key: os.environ.get(key) for key in settings}
    _set_env(settings)
    try:
        with mp.get_context("spawn").Pool(1) as pool:
            return pool.apply(_measure, args)
    finally:
        _set_env(previous)


def _set_env(values: dict) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _timed(method: str, args, n: int, res: int) -> dict:
    """Time (default allocator) and peak memory (exact accounting) of one method on one scene."""
    common = (args.scene, n, res, args.threads)
    if method == "dense":
        return _in_child("dense", *common, 1, args.chunk, args.seed, exact_memory=True)
    timed = _in_child(method, *common, args.repeats, args.chunk, args.seed, exact_memory=False)
    if "error" not in timed:
        timed["peak_mb"] = _in_child(method, *common, 1, args.chunk, args.seed, exact_memory=True)["peak_mb"]
    return timed


def _agreement(result: dict, reference: dict) -> tuple[float, float]:
    """max |image difference| and the largest gradient difference relative to the reference's max."""
    import numpy as np

    image = float(np.abs(result["image"] - reference["image"]).max())
    grad = max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
               for a, b in zip(result["grads"], reference["grads"]))
    return image, grad


def run(args) -> int:
    rows = []
    header = (f"{'N':>6} {'res':>4} | {'dense s':>7} {'MB':>5} | {'tiled s':>7} {'MB':>5} | {'compiled s':>10} "
              f"{'MB':>4} | {'tiled/comp':>10} {'dense/comp':>10} | {'max|dImg|':>9} {'max rel dGrad':>13} {'vs':>5}")
    print(f"scene={args.scene}  threads={args.threads}  cpus={os.cpu_count()}  (forward+backward, best of "
          f"{args.repeats} for the fast paths, 1 pass for dense; MB = peak memory growth over the set-up)")
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        for res in args.resolutions:
            tiled = _timed("tiled", args, n, res)
            compiled = _timed("compiled", args, n, res)
            run_dense = not args.no_dense and n * res * res <= args.dense_limit
            dense = _timed("dense", args, n, res) if run_dense else None
            row = {"scene": args.scene, "n": n, "resolution": res, "tiled_s": tiled["wall"],
                   "tiled_cpu_s": tiled["cpu"], "tiled_peak_mb": tiled["peak_mb"]}
            line = f"{n:>6} {res:>4} | "
            line += f"{dense['wall']:>7.2f} {dense['peak_mb']:>5.0f} | " if dense else f"{'-':>7} {'-':>5} | "
            if dense:
                row.update(dense_s=dense["wall"], dense_peak_mb=dense["peak_mb"])
            line += f"{tiled['wall']:>7.3f} {tiled['peak_mb']:>5.0f} | "
            if "error" in compiled:
                row["compiled_error"] = compiled["error"]
                line += f"{'unavailable':>10} {'-':>4} | (compiled kernel: {compiled['error']})"
                print(line, flush=True)
                rows.append(row)
                continue
            reference = dense or tiled
            image_err, grad_err = _agreement(compiled, reference)
            row.update(compiled_s=compiled["wall"], compiled_cpu_s=compiled["cpu"], compiled_peak_mb=compiled["peak_mb"],
                       tiled_over_compiled=tiled["wall"] / compiled["wall"], max_image_diff=image_err,
                       max_rel_grad_diff=grad_err, compared_with="dense" if dense else "tiled")
            dense_ratio = f"{dense['wall'] / compiled['wall']:>10.0f}" if dense else f"{'-':>10}"
            if dense:
                row["dense_over_compiled"] = dense["wall"] / compiled["wall"]
            line += (f"{compiled['wall']:>10.3f} {compiled['peak_mb']:>4.0f} | {row['tiled_over_compiled']:>10.1f} "
                     f"{dense_ratio} | {image_err:>9.1e} {grad_err:>13.1e} {row['compared_with']:>5}")
            print(line, flush=True)
            rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps({"scene": args.scene, "threads": args.threads, "chunk": args.chunk,
                                               "rows": rows}, indent=2))
    return 0
