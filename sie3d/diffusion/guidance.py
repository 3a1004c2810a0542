"""Diffusion guidance on rendered images: Interval Score Matching (ISM) and the SDS baseline.

The guidance sees images and conditioning only, never the 3D representation. One call::

    out = guidance(images [B, 3, H, W] in [0, 1], conditioning, azimuth_deg [B], iteration, generator)
    out["loss_ism"].backward()     # gradients reach the images through the VAE encoder

ISM (LucidDreamer, with Arc2Avatar's settings; ``shared/reference/settings.md``), per call:

1. latents x0 = VAE(images) (posterior mean × scaling factor), one t ~ U[t_min, t_max) in timesteps
   for the batch, s = max(t − δ, 0), noise ε = randn + offset·randn([1, 4, 1, 1]);
2. x_start = √ᾱ·x0 + √(1−ᾱ)·ε at start = max(s − xs_delta_t·xs_inv_steps, 0) (≈ x0 when start = 0);
3. DDIM inversion (η = 0, unconditional embedding E_SD("")) start → s in hops of xs_delta_t (the last
   hop shorter), at most xs_inv_steps hops: one UNet call at batch B per hop;
4. target = ε(x_s, s, ∅), and one more inversion step x_s → x_t with it (one UNet call);
5. guided ε̂ = ε(x_t, t, uncond) + ω·PerpNeg(ε(x_t, t, c_k) − ε(x_t, t, uncond)) in ONE UNet call
   over all B views × (1 + K) conditionings;
6. latent gradient g = λ·√((1−ᾱ_t)/ᾱ_t)·(ε̂ − target).

UNet calls per step: ⌈(s − start)/xs_delta_t⌉ + 2, i.e. 2..11 at the paper settings. (The reference
code evaluates the UNet once more when s = start, where no hop is needed; we skip that call.)

SDS uses the same t, noise, guided pass and weight with x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε and target ε.

Loss convention: ``loss = 0.5·Σ(x0 − sg[x0 − g])² / B``, so ∂loss/∂x0 = g / B (the mean over views of
the per-view gradient; the reference code back-propagates g summed over views, i.e. B times larger).
Its value, 0.5·‖g‖²/B, is the distance to the one-step target and is comparable across iterations.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from ..registry import Registry
from .conditioning import Conditioning, cfg_batch, split_cfg

#: guidance methods by name (``guidance.method``): classes ``(prior, guidance_cfg, cond_cfg) -> GuidanceBase``
METHODS: Registry = Registry("guidance method")


# --------------------------------------------------------------------------- pure pieces


def ddim_step(x: torch.Tensor, eps: torch.Tensor, abar_from: torch.Tensor | float,
              abar_to: torch.Tensor | float) -> torch.Tensor:
    """Deterministic DDIM move (η = 0) of ``x`` from noise level ᾱ_from to ᾱ_to with noise estimate ``eps``.

    x̂0 = (x − √(1−ᾱ_from)·ε)/√ᾱ_from, result √ᾱ_to·x̂0 + √(1−ᾱ_to)·ε. Denoising when ᾱ_to > ᾱ_from,
    inversion when ᾱ_to < ᾱ_from.
    """
    abar_from = torch.as_tensor(abar_from, dtype=x.dtype, device=x.device)
    abar_to = torch.as_tensor(abar_to, dtype=x.dtype, device=x.device)
    x0 = (x - (1 - abar_from).sqrt() * eps) / abar_from.sqrt()
    return abar_to.sqrt() * x0 + (1 - abar_to).sqrt() * eps


def ddim_walk(prior, x: torch.Tensor, timesteps: list[int], embedding: torch.Tensor) -> torch.Tensor:
    """Move ``x`` [B, 4, h, w] through successive ``timesteps`` with deterministic DDIM steps.

    Each step evaluates ε(x, current t, embedding) once (one UNet call at batch B): increasing timesteps
    invert (add noise), decreasing ones denoise. ``embedding`` is one ``[77, D]`` sequence for all views.
    """
    abar = prior.alphas_cumprod
    cond = embedding[None].expand(x.shape[0], *embedding.shape)
    for current, nxt in zip(timesteps[:-1], timesteps[1:]):
        x = ddim_step(x, prior.predict_noise(x, current, cond), abar[current], abar[nxt])
    return x


def perp_neg(delta: torch.Tensor, weights: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Perp-Neg aggregation: w_0·Δ_0 + Σ_{k≥1} w_k·(Δ_k − ⟨Δ_k, Δ_0⟩/‖Δ_0‖²·Δ_0).

    Args:
        delta: ``[B, K, ...]`` ε(c_k) − ε(uncond); slot 0 the positive.
        weights: ``[B, K]`` (slot 0 normally 1, negatives ≤ 0).
    Returns:
        ``[B, ...]``. Inner products run over all non-batch dimensions of one view.
    """
    main = delta[:, 0]
    flat_main = main.flatten(1)  # [B, N]
    out = weights[:, 0].reshape(-1, *[1] * (main.ndim - 1)) * main
    for k in range(1, delta.shape[1]):
        flat = delta[:, k].flatten(1)
        coef = (flat * flat_main).sum(1) / flat_main.pow(2).sum(1).clamp_min(eps)  # [B]
        perp = (flat - coef[:, None] * flat_main).view_as(main)
        out = out + weights[:, k].reshape(-1, *[1] * (main.ndim - 1)) * perp
    return out


def reparameterised_loss(latents: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Scalar 0.5·Σ(latents − sg[latents − grad])²/B whose gradient w.r.t. ``latents`` is ``grad / B``."""
    target = (latents - grad).detach()
    return 0.5 * (latents - target).pow(2).sum() / latents.shape[0]


@dataclass
class InversionTrace:
    """The ISM noising path of one step (all latents ``[B, 4, h, w]``).

    ``path`` lists the hop grid ``start, ..., s`` then ``t``; the UNet ran once at every grid timestep
    (at ``s`` for the target), so ``n_unet_evals == len(path) - 1``.
    """

    x_start: torch.Tensor
    x_s: torch.Tensor
    x_t: torch.Tensor
    target: torch.Tensor
    path: list[int]
    n_unet_evals: int


# --------------------------------------------------------------------------- guidance objects


class GuidanceBase:
    """Shared timestep sampling, noise, guided pass and loss of ISM and SDS (use :func:`make_guidance`)."""

    method = ""

    def __init__(self, prior, cfg, cond_cfg=None):
        validate_guidance_config(cfg, prior.num_train_timesteps)
        self.prior = prior
        self.cfg = cfg
        self.cond_cfg = cond_cfg

    # -------------------------------------------------------------- sampling

    def warmup_rate(self, iteration: int) -> float:
        """1 → 0 over the warm-up: 1 − min((iteration + 1)/anneal_iters, 1); 0 without ``anneal``.

        ``iteration`` counts from 0; the released codes count from 1, hence the + 1 (with their
        ``warmup_iter: 1`` the rate is 0 from the first iteration on).
        """
        if not self.cfg.anneal:
            return 0.0
        return max(0.0, 1.0 - (iteration + 1) / max(self.cfg.anneal_iters, 1))

    def t_max_fraction(self, iteration: int) -> float:
        """Upper end of the t range at ``iteration``: t_range[1], raised toward anneal_start by the warm-up."""
        t_hi = self.cfg.t_range[1]
        return t_hi + (self.cfg.anneal_start - t_hi) * self.warmup_rate(iteration)

    def delta_at(self, iteration: int) -> int:
        """δ at ``iteration``: delta_t + ⌈rate·(delta_t_start − delta_t)⌉ (the released annealed interval)."""
        return self.cfg.delta_t + math.ceil(self.warmup_rate(iteration) * (self.cfg.delta_t_start - self.cfg.delta_t))

    def timestep_bounds(self, iteration: int) -> tuple[int, int]:
        """[t_min, t_max) in integer timesteps."""
        T = self.prior.num_train_timesteps
        t_min = int(T * self.cfg.t_range[0])
        return t_min, max(int(T * self.t_max_fraction(iteration)), t_min + 1)

    def sample_timesteps(self, iteration: int, generator: torch.Generator | None = None) -> tuple[int, int]:
        """(t, s) with t ~ U[t_min, t_max) and s = max(t − δ, 0) (:meth:`delta_at`); one pair for the whole batch."""
        t_min, t_max = self.timestep_bounds(iteration)
        t = int(torch.randint(t_min, t_max, (1,), generator=generator, device="cpu").item())
        return t, max(t - self.delta_at(iteration), 0)

    def sample_noise(self, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """randn + offset_noise·randn([1, C, 1, 1]) (one offset shared by the batch), drawn on CPU."""
        noise = torch.randn(like.shape, generator=generator, device="cpu")
        offset = torch.randn((1, like.shape[1], 1, 1), generator=generator, device="cpu")
        return (noise + self.cfg.offset_noise * offset).to(like.device, like.dtype)

    def q_sample(self, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        """Forward noising √ᾱ_t·x0 + √(1−ᾱ_t)·ε."""
        abar = self.prior.alphas_cumprod[t]
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def lambda_weight(self, t: int) -> torch.Tensor:
        """λ·√((1−ᾱ_t)/ᾱ_t), a 0-d float32 tensor on the prior's device (computed there in float64: no
        read-back to the host, and the value a float64 host computation gives)."""
        abar = self.prior.alphas_cumprod[t].double()
        return (self.cfg.weight * ((1 - abar) / abar).sqrt()).float()

    # -------------------------------------------------------------- guided pass

    def guided_noise(self, x_t: torch.Tensor, t: int, conditioning: Conditioning,
                     azimuth_deg: torch.Tensor) -> torch.Tensor:
        """ε̂ ``[B, 4, h, w]`` = ε(x_t, t, uncond) + ω·PerpNeg(ε(x_t, t, c_k) − ε(x_t, t, uncond)), one UNet call
        over the B views × (1 + K) conditionings laid out by :func:`sie3d.diffusion.conditioning.cfg_batch`."""
        b = x_t.shape[0]
        cams = conditioning.for_cameras(azimuth_deg)
        k = cams.embeddings.shape[1]
        latents_in = cfg_batch(x_t, x_t[:, None].expand(b, k, *x_t.shape[1:]))
        uncond = conditioning.uncond[None].expand(b, *conditioning.uncond.shape)
        embeddings_in = cfg_batch(uncond, cams.embeddings.to(uncond))
        eps_uncond, eps_cond = split_cfg(self.prior.predict_noise(latents_in, t, embeddings_in), b)
        delta = eps_cond - eps_uncond[:, None]
        return eps_uncond + self.cfg.guidance_scale * perp_neg(delta, cams.weights.to(delta))

    # -------------------------------------------------------------- entry point

    def _check_inputs(self, images: torch.Tensor, conditioning, azimuth_deg) -> torch.Tensor:
        if not isinstance(conditioning, Conditioning):
            raise TypeError(f"conditioning must be a sie3d.diffusion.conditioning.Conditioning (from build_conditioning), "
                            f"got {type(conditioning).__name__}")
        if self.cond_cfg is not None and conditioning.cfg != self.cond_cfg:
            raise ValueError("the conditioning was built with another conditioning config than this guidance's; "
                             "build both from the same config (or pass cond_cfg=None)")
        azimuth = torch.as_tensor(azimuth_deg, dtype=torch.float64, device="cpu").reshape(-1)
        if images.ndim != 4 or images.shape[1] != 3 or azimuth.numel() != images.shape[0]:
            raise ValueError(f"images must be [B, 3, H, W] with one azimuth per image; got images "
                             f"{tuple(images.shape)} and {azimuth.numel()} azimuths")
        return azimuth

    @staticmethod
    def _clock() -> float:
        """Host time. No device synchronisation (that would stall every step): on CUDA the parts are
        attributed correctly only with CUDA_LAUNCH_BLOCKING=1, as ``sie3d bench generate --paper-breakdown`` runs."""
        return time.perf_counter()

    def __call__(self, images: torch.Tensor, conditioning: Conditioning, azimuth_deg, iteration: int,
                 generator: torch.Generator | None = None) -> dict:
        """One guidance step on renders ``images`` ``[B, 3, H, W]`` in [0, 1] seen from ``azimuth_deg`` ``[B]``.

        Randomness comes from ``generator`` (CPU; the global RNG when None) in a fixed order: t, the
        noise, the offset noise. Returns

        * ``loss_ism`` / ``loss_sds``: scalar, differentiable w.r.t. ``images`` (convention in the module doc);
        * ``grad_norm``: ‖g‖ over the batch's latents (tensor);
        * ``t`` (and ``s`` for ISM): the timesteps used (ints);
        * ``n_unet_evals``: UNet forward calls of this step;
        * ``time_encode`` / ``time_unet``: seconds in the VAE encoder and in the UNet passes.
        """
        azimuth = self._check_inputs(images, conditioning, azimuth_deg)
        evals_before = self.prior.n_unet_evals
        tick = self._clock()
        latents = self.prior.encode_images(images, self.cfg.latent_resolution)
        t, s = self.sample_timesteps(iteration, generator)
        noise = self.sample_noise(latents, generator)
        tock = self._clock()
        with torch.no_grad():
            x_t, target = self.noisy_latents_and_target(latents.detach(), noise, t, s, conditioning)
            guided = self.guided_noise(x_t, t, conditioning, azimuth)
            grad = torch.nan_to_num(self.lambda_weight(t) * (guided - target))
        out = {
            f"loss_{self.method}": reparameterised_loss(latents, grad),
            "grad_norm": grad.norm(),
            "t": t,
            "n_unet_evals": self.prior.n_unet_evals - evals_before,
            "time_encode": tock - tick,
            "time_unet": self._clock() - tock,
        }
        if self.method == "ism":
            out["s"] = s
        return out

    def noisy_latents_and_target(self, x0, noise, t, s, conditioning):
        """(x_t, target) for the guided pass; defined by ISM and SDS."""
        raise NotImplementedError


@METHODS.register("ism")
class IntervalScoreMatching(GuidanceBase):
    """ISM guidance (see the module docstring for the procedure)."""

    method = "ism"

    def hop_grid(self, s: int) -> list[int]:
        """Timesteps start, start + xs_delta_t, ..., s of the inversion x_start → x_s (at most xs_inv_steps hops)."""
        start = max(s - self.cfg.xs_delta_t * self.cfg.xs_inv_steps, 0)
        return [*range(start, s, self.cfg.xs_delta_t), s]

    def invert(self, x0: torch.Tensor, noise: torch.Tensor, t: int, s: int,
               embedding: torch.Tensor) -> InversionTrace:
        """x0 → x_start → (DDIM inversion in hops) → x_s → (one step) → x_t, with ``embedding`` ``[77, D]``."""
        abar = self.prior.alphas_cumprod
        cond = embedding[None].expand(x0.shape[0], *embedding.shape)
        evals_before = self.prior.n_unet_evals
        grid = self.hop_grid(s)
        x_start = self.q_sample(x0, noise, grid[0])
        x_s = ddim_walk(self.prior, x_start, grid, embedding)
        target = self.prior.predict_noise(x_s, s, cond)
        x_t = ddim_step(x_s, target, abar[s], abar[t])
        return InversionTrace(x_start, x_s, x_t, target, grid + [t], self.prior.n_unet_evals - evals_before)

    def noisy_latents_and_target(self, x0, noise, t, s, conditioning):
        trace = self.invert(x0, noise, t, s, conditioning.inversion)
        return trace.x_t, trace.target


@METHODS.register("sds")
class ScoreDistillation(GuidanceBase):
    """SDS baseline: x_t from forward noising, target = the noise; same signature as ISM."""

    method = "sds"

    def noisy_latents_and_target(self, x0, noise, t, s, conditioning):
        return self.q_sample(x0, noise, t), noise


def validate_guidance_config(cfg, num_train_timesteps: int = 1000) -> None:
    """Raise ValueError naming the bad ``guidance.*`` value."""
    if cfg.method not in METHODS:
        raise ValueError(f"guidance.method={cfg.method!r}; use one of {', '.join(METHODS.names())}")
    lo, hi = cfg.t_range
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"guidance.t_range={cfg.t_range} must satisfy 0 <= lo < hi <= 1 (fractions of T)")
    if cfg.anneal and not hi <= cfg.anneal_start <= 1.0:
        raise ValueError(f"guidance.anneal_start={cfg.anneal_start} must lie in [t_range[1], 1]")
    for name in ("delta_t", "delta_t_start", "xs_delta_t"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"guidance.{name} must be at least 1 timestep")
    if cfg.xs_inv_steps < 0:
        raise ValueError("guidance.xs_inv_steps must be >= 0 (0: x_s by forward noising alone)")
    if cfg.latent_resolution < 1:
        raise ValueError("guidance.latent_resolution must be positive")
    if int(num_train_timesteps * lo) == int(num_train_timesteps * hi):
        raise ValueError(f"guidance.t_range={cfg.t_range} holds no integer timestep of {num_train_timesteps}")


def make_guidance(prior, guidance_cfg, cond_cfg=None) -> GuidanceBase:
    """ISM or SDS per ``guidance_cfg.method``.

    ``cond_cfg`` (optional): the conditioning config the trainer uses; when given, a call with a
    conditioning built from another config is refused (an ablation applied to only one of them).
    """
    return METHODS.get(guidance_cfg.method)(prior, guidance_cfg, cond_cfg)


# --------------------------------------------------------------------------- 2D playground


@dataclass
class FitHistory:
    """What :func:`fit_image` records per iteration (lists of floats / ints) and the final image."""

    loss: list[float]
    grad_norm: list[float]
    t: list[int]
    n_unet_evals: list[int]
    image: torch.Tensor  # [1, 3, H, W] in [0, 1]
    snapshots: dict[int, torch.Tensor]  # iteration -> [1, 3, H, W]


def fit_image(guidance: GuidanceBase, conditioning: Conditioning, image: torch.Tensor, azimuth_deg: float = 0.0,
              iterations: int = 100, lr: float = 0.05, seed: int = 0, snapshot_every: int = 0) -> FitHistory:
    """Optimise the pixels of one image with the guidance alone (the 2D playground).

    The image is parameterised by logits (sigmoid keeps it in [0, 1]) and optimised with Adam; t and
    the noise come from a generator seeded with ``seed``, so ISM and SDS can be run on the same draws.

    Args:
        image: ``[1, 3, H, W]`` start image in [0, 1].
    """
    logits = torch.logit(image.detach().clamp(1e-3, 1 - 1e-3)).clone().requires_grad_(True)
    optimiser = torch.optim.Adam([logits], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history = FitHistory([], [], [], [], image, {})
    for iteration in range(iterations):
        current = torch.sigmoid(logits)
        if snapshot_every and iteration % snapshot_every == 0:
            history.snapshots[iteration] = current.detach().clone()
        out = guidance(current, conditioning, [azimuth_deg], iteration, generator)
        optimiser.zero_grad()
        out[f"loss_{guidance.method}"].backward()
        optimiser.step()
        history.loss.append(float(out[f"loss_{guidance.method}"].detach()))
        history.grad_norm.append(float(out["grad_norm"]))
        history.t.append(out["t"])
        history.n_unet_evals.append(out["n_unet_evals"])
    history.image = torch.sigmoid(logits).detach()
    history.snapshots[iterations] = history.image
    return history
