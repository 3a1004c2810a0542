"""The paper settings on CUDA, plain against fast: wall-clock ms per iteration, peak memory, and whether
the fast path computes the same ISM step (``sie3d bench generate --paper``; :mod:`sie3d.bench.generate`).

Each setting of :data:`SPEED_SETTINGS` is one :meth:`sie3d.diffusion.prior.DiffusionPrior.set_speed`
call on the same random full-size SD-1.5-shaped prior: ``plain`` (VAE encoder in float32, eager UNet,
contiguous layout: the path as it was) and the fast ones (VAE encoder in bfloat16 or float16, UNet
passes replayed as CUDA graphs, channels-last). Wall clock means no launch blocking: the device is
synchronised only before and after the timed iterations.

Agreement (:func:`ism_agreement`): the same four 512² views, conditioning, timesteps and noise through
one ISM step of each setting; the loss and the gradient reaching the images are compared with
``plain``'s by relative L2 error. ``plain`` run twice gives the floor (cuDNN may pick other kernels).
A setting agrees when both errors are within :data:`FP16_TOLERANCE`: the UNet already runs in float16
in every setting, whose outputs differ from float32 ones by about this much.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

#: name -> DiffusionPrior.set_speed arguments, in the order they are measured (plain first: set_speed
#: is applied to the one prior in turn, the VAE encoder's float32 weights restored between settings)
SPEED_SETTINGS: dict[str, dict[str, Any]] = {
    "plain": dict(vae_precision="fp32", cuda_graphs=False, channels_last=False),
    "graphs": dict(vae_precision="fp32", cuda_graphs=True, channels_last=True),
    "fast-bf16": dict(vae_precision="bf16", cuda_graphs=True, channels_last=True),
    "fast-fp16": dict(vae_precision="fp16", cuda_graphs=True, channels_last=True),
}
#: relative L2 error of the ISM loss and image gradient within which a fast setting counts as the same step
FP16_TOLERANCE = 1e-2
#: projections of a whole avatar: the paper's preset (5000) and the released code (7000)
PROJECTED_ITERATIONS = (5000, 7000)


@dataclass
class IsmStep:
    loss: float
    grad: torch.Tensor  # [B, 3, H, W] d loss / d images


def apply_speed(prior, encoder_fp32: dict[str, torch.Tensor], setting: dict[str, Any]):
    """``prior`` with ``setting``, its VAE encoder's weights first put back to ``encoder_fp32`` (a cast
    to bf16 and back would keep bf16's rounding)."""
    prior.set_speed(**setting)
    prior.vae.load_state_dict(encoder_fp32, strict=False)  # copied into the encoder's current dtype
    return prior


def encoder_weights(prior) -> dict[str, torch.Tensor]:
    """A float32 copy of the VAE encoder's (and quant_conv's) weights, keyed as in the VAE's state dict."""
    return {k: v.detach().clone() for k, v in prior.vae.state_dict().items()
            if k.startswith(("encoder.", "quant_conv."))}


def ism_steps(prior, config, steps: int = 3, seed: int = 0) -> list[IsmStep]:
    """``steps`` ISM steps on fixed smooth 512² views, each with its own seeded timesteps and noise."""
    from ..diffusion.conditioning import build_conditioning
    from ..diffusion.guidance import make_guidance

    device = prior.device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    identity = torch.randn(prior.identity_dim or 128, generator=generator, device="cpu")
    conditioning = build_conditioning(prior, identity, config.conditioning)
    guidance = make_guidance(prior, config.guidance, config.conditioning)
    size = config.guidance.latent_resolution * prior.vae_scale_factor
    coarse = torch.rand(config.train.batch_size, 3, 16, 16, generator=generator, device="cpu")
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear").to(device)
    azimuths = torch.linspace(-180, 180, config.train.batch_size + 1, device="cpu")[:-1]
    out = []
    for k in range(steps):
        x = images.clone().requires_grad_(True)
        result = guidance(x, conditioning, azimuths, iteration=0,
                          generator=torch.Generator(device="cpu").manual_seed(seed + 1 + k))
        loss = result[f"loss_{guidance.method}"]
        loss.backward()
        out.append(IsmStep(float(loss.detach()), x.grad.detach().float().clone()))
    return out


def relative_errors(steps: list[IsmStep], reference: list[IsmStep]) -> tuple[float, float]:
    """Largest relative error over the steps: (|loss − loss_ref| / |loss_ref|, ‖g − g_ref‖ / ‖g_ref‖)."""
    loss = max(abs(a.loss - b.loss) / max(abs(b.loss), 1e-30) for a, b in zip(steps, reference))
    grad = max(float((a.grad - b.grad).norm() / b.grad.norm().clamp_min(1e-30)) for a, b in zip(steps, reference))
    return loss, grad


def measure_paper(config, prior, iterations: int, warmup: int, photo=None,
                  settings: dict[str, dict[str, Any]] = SPEED_SETTINGS) -> list[dict[str, Any]]:
    """One row per setting: wall ms/it, peak GiB, projected minutes, agreement with ``plain``."""
    from ._timing import time_iterations

    device = prior.device
    encoder_fp32 = encoder_weights(prior)
    rows, reference = [], None
    for name, setting in settings.items():
        apply_speed(prior, encoder_fp32, setting)
        steps = ism_steps(prior, config)
        if reference is None:
            reference = steps
            floor = relative_errors(ism_steps(prior, config), reference)
        loss_error, grad_error = relative_errors(steps, reference) if name != "plain" else floor
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            timing = time_iterations(replace(config, models=replace(config.models, **setting)), device, iterations,
                                     warmup, photo, prior=prior, identity_dim=prior.identity_dim)
        except Exception as exc:  # one failing setting (e.g. diverging in float16) must not hide the others
            rows.append({"setting": name, **setting, "error": f"{type(exc).__name__}: {exc}"})
            continue
        ms = timing.wall_per_iteration * 1e3
        rows.append({"setting": name, **setting, "ms_per_iteration": ms,
                     "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
                     "unet_calls": sum(r.get("n_unet_evals", 0) for r in timing.records) / len(timing.records),
                     **{f"minutes_{n}": ms * n / 60e3 for n in PROJECTED_ITERATIONS},
                     "loss_rel_error": loss_error, "grad_rel_error": grad_error,
                     "agrees": loss_error <= FP16_TOLERANCE and grad_error <= FP16_TOLERANCE})
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    head = (f"{'setting':<10s} {'vae':>5s} {'graphs':>6s} {'cl':>3s} {'ms/it':>7s} {'peak GiB':>8s} "
            f"{'UNet/it':>7s} {'min@5000':>8s} {'min@7000':>8s} {'loss err':>9s} {'grad err':>9s}  same step")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['setting']:<10s} failed: {r['error']}")
            continue
        lines.append(f"{r['setting']:<10s} {r['vae_precision']:>5s} {str(r['cuda_graphs']):>6s} "
                     f"{'y' if r['channels_last'] else 'n':>3s} {r['ms_per_iteration']:>7.1f} {r['peak_gib']:>8.2f} "
                     f"{r['unet_calls']:>7.2f} {r['minutes_5000']:>8.1f} {r['minutes_7000']:>8.1f} "
                     f"{r['loss_rel_error']:>9.2e} {r['grad_rel_error']:>9.2e}  "
                     + ("floor" if r["setting"] == "plain" else "yes" if r["agrees"] else "NO"))
    return "\n".join(lines) + (f"\n(wall clock, no launch blocking; errors relative to plain, tolerance "
                               f"{FP16_TOLERANCE:g}; plain's row: plain against itself)")
