"""The tiny profile's networks: small randomly initialised UNet, VAE and CLIP text encoders with SD's
interfaces (offline CPU runs and tests; :meth:`sie3d.diffusion.prior.DiffusionPrior.tiny`)."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from .tokenizer import BOS_ID, EOS_ID, MAX_LENGTH, VOCAB_SIZE

#: width of the tiny profile's text encoders (= the UNet's cross-attention width)
TINY_HIDDEN = 32


def with_seed(seed: int):
    """Initialise a module under a fixed CPU seed without touching the caller's RNG stream."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.random.fork_rng(devices=[]))
    torch.manual_seed(seed)
    return stack


def tiny_unet(cross_attention_dim: int = TINY_HIDDEN) -> UNet2DConditionModel:
    """~1M-parameter UNet2DConditionModel with SD's interface (4 latent channels, cross-attention)."""
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=8)


def tiny_vae() -> AutoencoderKL:
    """~80k-parameter AutoencoderKL with SD's 8x downsampling (4 blocks) and 4 latent channels."""
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=8, sample_size=64)


def calibrate_latent_scale(vae: AutoencoderKL, seed: int = 0) -> float:
    """Set ``vae.config.scaling_factor`` so that latents of smooth images have unit std (SD's 0.18215 rule).

    The calibration batch is 4 random 8x8 colour fields upsampled to the VAE's sample size (seeded).
    Returns the factor.
    """
    size = int(vae.config.sample_size)
    gen = torch.Generator().manual_seed(seed)
    images = F.interpolate(torch.rand(4, 3, 8, 8, generator=gen, device="cpu"), size=(size, size), mode="bilinear",
                           align_corners=False)
    with torch.no_grad():
        std = vae.encode(images * 2 - 1).latent_dist.mean.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    return 1.0 / std


def tiny_text_encoder(hidden_size: int = TINY_HIDDEN) -> CLIPTextModel:
    """2-layer CLIPTextModel over the full CLIP vocabulary (so the real tokenizer's ids are valid)."""
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_LENGTH, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        pad_token_id=EOS_ID))
