"""``sie3d bench render``: forward+backward time and peak memory of the CPU rasterizer vs the dense reference.

Scene (fixed, seeded): N random Gaussians in a unit cube centred 3 units in front of a pinhole
camera whose field of view (2 atan 0.2, focal = 2.5 x width) frames the cube's front face;
log-scales uniform in [-3.5, -2.5], random rotations, opacities and colours uniform in [0, 1].
The loss is a fixed random weighting of RGB + alpha, so every input gets a gradient.

Each measurement runs in a fresh process with ``--threads`` torch threads after a warm-up pass;
peak memory is the growth of VmHWM over the resident size just before the measured pass, with
glibc set to return freed memory at once (see :func:`_in_child`). The tiled rasterizer is timed as
the best of ``--repeats`` passes, once with default allocator settings (the reported time) and once
with exact memory accounting (its peak memory, and the time the dense/tiled ratio uses); the dense
reference (pixel chunks recomputed in backward) gets one pass with exact memory accounting. Both images and all gradients are
compared. Timings on a shared machine are noisy: read the ratios, measured side by side.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

_MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"
DESCRIPTION = "CPU rasterizer (tiled) vs dense reference: forward+backward time, peak memory, agreement"


def add_arguments(parser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000], help="numbers of Gaussians")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256], help="square image sides")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per measurement (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of the tiled rasterizer (best kept)")
    parser.add_argument("--chunk", type=int, default=32, help="Gaussians per tile per step of the tiled rasterizer")
    parser.add_argument("--no-dense", action="store_true", help="skip the (slow) dense reference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")


def bench_scene(n: int, resolution: int, seed: int = 0):
    """(splats, viewmats [1, 4, 4], Ks [1, 3, 3], loss weights [1, H, W, 4]) of the benchmark scene."""
    import torch

    from ..render.splats import random_splats

    splats = random_splats(n, torch.Generator().manual_seed(seed))
    focal = 2.5 * resolution
    Ks = torch.tensor([[focal, 0.0, resolution / 2], [0.0, focal, resolution / 2], [0.0, 0.0, 1.0]])[None]
    weights = torch.rand(1, resolution, resolution, 4, generator=torch.Generator().manual_seed(seed + 1))
    return splats, torch.eye(4)[None], Ks, weights


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


def _measure(method: str, n: int, resolution: int, threads: int, repeats: int, chunk: int, seed: int) -> dict:
    """Runs in a child process: one scene, warm-up, timed passes; returns times, memory, outputs."""
    import torch

    from ..render.rasterize import composite_dense, composite_tiled, project_gaussians

    torch.set_num_threads(threads)
    splats, viewmats, Ks, weights = bench_scene(n, resolution, seed)
    inputs = [splats.means, splats.quats, splats.scales, splats.opacities, splats.colors]
    for t in inputs:
        t.requires_grad_(True)
    background = torch.ones(1, 4)

    def one_pass(size: int = resolution):
        for t in inputs:
            t.grad = None
        proj = project_gaussians(*inputs[:4], viewmats, Ks * (size / resolution), size, size)
        features = torch.cat([splats.colors[None], proj.depths[..., None]], -1)
        if method == "tiled":
            image, alpha = composite_tiled(proj, features, background, size, size, chunk=chunk)
        else:
            image, alpha = composite_dense(proj, features, background, size, size, use_checkpoint=True)
        w = weights[:, :size, :size]
        loss = (image * w).sum() + (alpha[..., 0] * w[..., 0]).sum()
        loss.backward()
        return image.detach()

    # warm-up (pages in code and thread pools); the dense reference warms up on a small image
    one_pass(resolution if method == "tiled" else 16)
    repeats = repeats if method == "tiled" else 1
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
    faults, so the reported tiled time comes from a run without it."""
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


def run(args) -> int:
    import numpy as np

    rows = []
    header = (f"{'N':>6} {'res':>4} | {'tiled s':>8} {'cpu s':>6} {'peak MB':>8} | {'dense s*':>8} {'peak MB':>8} | "
              f"{'dense/tiled':>11} {'max|dImg|':>10} {'max rel dGrad':>13}")
    print(f"threads={args.threads}  chunk={args.chunk}  cpus={os.cpu_count()}  (forward+backward, best of "
          f"{args.repeats} for tiled, 1 pass for dense)")
    print("* dense times and the ratio are measured with exact memory accounting (mmap for every large "
          "allocation), the tiled column without; the ratio compares both under the same setting")
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        for res in args.resolutions:
            tiled = _in_child("tiled", n, res, args.threads, args.repeats, args.chunk, args.seed, exact_memory=False)
            exact = _in_child("tiled", n, res, args.threads, args.repeats, args.chunk, args.seed, exact_memory=True)
            tiled["peak_mb"] = exact["peak_mb"]
            row = {"n": n, "resolution": res, "tiled_s": tiled["wall"], "tiled_cpu_s": tiled["cpu"],
                   "tiled_peak_mb": tiled["peak_mb"], "tiled_exact_memory_s": exact["wall"]}
            line = f"{n:>6} {res:>4} | {tiled['wall']:>8.3f} {tiled['cpu']:>6.2f} {tiled['peak_mb']:>8.0f} | "
            if not args.no_dense:
                # the dense reference always runs with exact memory accounting: with glibc's default
                # settings its chunked checkpointing grows the heap without bound (24 GB at 10k / 256²)
                dense = _in_child("dense", n, res, args.threads, 1, args.chunk, args.seed, exact_memory=True)
                image_err = float(np.abs(tiled["image"] - dense["image"]).max())
                grad_err = max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
                               for a, b in zip(tiled["grads"], dense["grads"]))
                row.update({"dense_s": dense["wall"], "dense_peak_mb": dense["peak_mb"],
                            "speedup": dense["wall"] / exact["wall"], "max_image_diff": image_err,
                            "max_rel_grad_diff": grad_err})
                line += (f"{dense['wall']:>8.2f} {dense['peak_mb']:>8.0f} | {row['speedup']:>11.1f} "
                         f"{image_err:>10.2e} {grad_err:>13.2e}")
            print(line, flush=True)
            rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "chunk": args.chunk, "rows": rows}, indent=2))
    return 0
