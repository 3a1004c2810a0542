"""``sie3d bench ism``: the cost of one guidance step.

Times ISM and SDS steps (VAE encode + UNet calls + backward to the images) side by side in one run,
and counts the UNet calls of every ISM step at the configured settings (the built-in defaults are the
paper's: t ~ U[20, 500), δ = 50, hops of 50, at most 20 hops). The count is what the guidance reports
(``n_unet_evals``); beside it, the expected mean over t ~ U[t_min, t_max) from the hop grid. The
identity is a seeded random vector: timings do not depend on it.
"""

from __future__ import annotations

import statistics
import time

#: latent size used with the tiny prior unless --latent-resolution says otherwise (quick preset's value)
TINY_LATENT_RESOLUTION = 8

DESCRIPTION = "time of one ISM / SDS step and UNet calls per ISM step (tiny prior on CPU by default)"


def add_arguments(parser) -> None:
    from ..config_args import add_config_arguments

    add_config_arguments(parser)
    parser.add_argument("--prior", choices=["tiny", "config"], default="tiny",
                        help="tiny: the offline prior (default); config: models.prior of the params")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per method (default 30)")
    parser.add_argument("--batch", type=int, default=4, help="views per step (paper: 4)")
    parser.add_argument("--latent-resolution", type=int, default=None,
                        help="override guidance.latent_resolution (default: 8 with the tiny prior, "
                             "i.e. 64x64 renders as in the quick preset; else the params' value)")


def _timed_steps(guidance, conditioning, images, azimuths, steps: int, seed: int):
    import torch

    generator = torch.Generator().manual_seed(seed)
    times, evals, ts = [], [], []
    for iteration in range(-2, steps):  # two untimed warm-up steps
        leaf = images.detach().clone().requires_grad_(True)
        if images.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = guidance(leaf, conditioning, azimuths, max(iteration, 0), generator)
        out[f"loss_{guidance.method}"].backward()
        if images.is_cuda:
            torch.cuda.synchronize()
        if iteration >= 0:
            times.append(time.perf_counter() - start)
            evals.append(out["n_unet_evals"])
            ts.append(out["t"])
    return times, evals, ts


def expected_unet_calls(ism) -> float:
    """Mean UNet calls per ISM step over t ~ U[t_min, t_max): hops of the grid + target + guided pass."""
    t_min, t_max = ism.timestep_bounds(0)
    counts = [len(ism.hop_grid(max(t - ism.cfg.delta_t, 0))) - 1 + 2 for t in range(t_min, t_max)]
    return sum(counts) / len(counts)


def run(args) -> int:
    import dataclasses

    import torch

    from ..config_args import config_from_args
    from ..diffusion.conditioning import build_conditioning
    from ..diffusion.guidance import make_guidance
    from ..diffusion.prior import DiffusionPrior
    from ..runtime import resolve_device

    config = config_from_args(args)
    config.conditioning.cache_embeddings = False
    device = resolve_device(args.device)
    if args.prior == "tiny":
        config.models.prior = "tiny"
    prior = DiffusionPrior.from_config(config, device)
    gcfg = config.guidance
    latent_resolution = args.latent_resolution or (TINY_LATENT_RESOLUTION if args.prior == "tiny" else None)
    if latent_resolution is not None:
        gcfg = dataclasses.replace(gcfg, latent_resolution=latent_resolution)
    identity = torch.randn(prior.identity_dim or 128, generator=torch.Generator().manual_seed(0), device="cpu")
    conditioning = build_conditioning(prior, identity, config.conditioning)
    size = gcfg.latent_resolution * prior.vae_scale_factor
    images = torch.rand(args.batch, 3, size, size, generator=torch.Generator().manual_seed(1),
                        device="cpu").to(device)
    azimuths = torch.linspace(-180, 180, args.batch + 1, device="cpu")[:-1]

    print(f"prior: {prior.describe()}")
    print(f"torch threads: {torch.get_num_threads()}; batch {args.batch} views of {size}x{size} "
          f"-> latents {gcfg.latent_resolution}x{gcfg.latent_resolution}; t_range {gcfg.t_range}, "
          f"delta_t {gcfg.delta_t}, xs_delta_t {gcfg.xs_delta_t}, xs_inv_steps {gcfg.xs_inv_steps}")
    results = {}
    for method in ("ism", "sds"):
        guidance = make_guidance(prior, dataclasses.replace(gcfg, method=method))
        results[method] = _timed_steps(guidance, conditioning, images, azimuths, args.steps, config.run.seed)
        if method == "ism":
            expected = expected_unet_calls(guidance)
    for method, (times, evals, _) in results.items():
        print(f"{method}: {statistics.median(times) * 1e3:8.1f} ms/step median, "
              f"{statistics.mean(times) * 1e3:8.1f} ms mean over {len(times)} steps; "
              f"UNet calls/step mean {statistics.mean(evals):.2f} (min {min(evals)}, max {max(evals)})")
    ism_times, ism_evals, ism_ts = results["ism"]
    print(f"ism/sds time ratio (medians): {statistics.median(ism_times) / statistics.median(results['sds'][0]):.2f}")
    print(f"ISM UNet calls per step: counted mean {statistics.mean(ism_evals):.2f} over {len(ism_evals)} steps "
          f"(t in {min(ism_ts)}..{max(ism_ts)}); expected mean over the t range {expected:.2f}; "
          f"each step = hops at batch {args.batch} + target at batch {args.batch} + "
          f"one guided call at batch {args.batch * 4}")
    return 0
