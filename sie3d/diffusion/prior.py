"""The diffusion prior: UNet + VAE + DDIM noise schedule + the two CLIP text encoders.

Two profiles share one class and one interface:

* ``arc2face`` -- real weights from the weights registry: the Arc2Face UNet (SD-1.5 fine-tuned on
  ArcFace-conditioned faces) and ID encoder, SD-1.5's VAE, CLIP text encoder (E_SD), tokenizer and
  noise schedule, plus Arc2Face's LoRA (``models.lora``, applied at ``models.lora_scale`` on every UNet
  call; :mod:`sie3d.diffusion.lora`). The VAE and text encoders run in float32 (asked for explicitly:
  transformers 5 would otherwise use the dtype a ``config.json`` names); the UNet in float16 when
  ``models.half_precision`` is set and the device is CUDA.

On CUDA, :meth:`DiffusionPrior.set_speed` (``models.vae_precision``, ``models.cuda_graphs``,
``models.channels_last``) runs the VAE encoder and its backward in bfloat16 or float16, replays the UNet's
passes as CUDA graphs (:mod:`sie3d.diffusion.cuda_graphs`) and lays convolution inputs out channels-last;
``sie3d bench generate --paper`` measures each against the plain path.
* ``tiny`` -- small randomly initialised networks built from code with a fixed seed
  (``models.tiny_prior_seed``), for offline CPU runs. Same tokenizer (the real CLIP vocabulary), same
  noise schedule, same tensor interfaces; its outputs carry no meaning about faces.

:func:`save_in_registry_layout` writes any prior's networks in the registry's on-disk layout, so tests
load tiny weights through the real-weights code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel

from ..runtime import diffusion_dtype
from .cuda_graphs import GraphedCall
from .lora import LoraInfo, load_lora
from .text_encoders import (
    IdentityToken,
    PromptEmbeddingCache,
    encode_prompts,
    encode_with_identity,
    fit_identity_to_hidden,
    parameters_fingerprint,
    weights_fingerprint,
)
from .tiny_networks import calibrate_latent_scale, tiny_text_encoder, tiny_unet, tiny_vae, with_seed
from .tokenizer import load_clip_tokenizer, write_tokenizer_files

#: registry models the arc2face profile loads (besides the LoRA)
REGISTRY_MODELS = ("arc2face-unet", "arc2face-encoder", "sd15-vae", "sd15-text-encoder", "sd15-tokenizer")
#: ``models.vae_precision`` name -> dtype of the VAE encoder on CUDA
VAE_PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: ArcFace embedding size the Arc2Face encoder was trained with
ARCFACE_DIM = 512
#: SD-1.5's noise schedule (also used by the tiny profile)
SD15_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                     clip_sample=False, set_alpha_to_one=False, steps_offset=1)
#: strip this prefix from / add it to CLIP text-encoder keys to match the hub checkpoints
_CLIP_PREFIX = "text_model."


class PriorError(RuntimeError):
    """The prior cannot be built or does not match its inputs (names the problem and the fix)."""


def load_clip_text_model(directory: Path) -> CLIPTextModel:
    """A float32 CLIPTextModel from a local folder; missing weights are an error, not a random init."""
    model, info = CLIPTextModel.from_pretrained(str(directory), dtype=torch.float32, output_loading_info=True)
    missing = sorted(k for k in info.get("missing_keys", ()) if "position_ids" not in k)
    if missing:
        raise PriorError(f"{directory}: the checkpoint lacks {len(missing)} weights (e.g. {missing[0]}); "
                         "it is not a CLIP text encoder or is truncated; fetch it again with "
                         "sie3d weights download --force <model>")
    return model.eval()


@dataclass
class DiffusionPrior:
    """A latent diffusion model as seen by the guidance: noise prediction, VAE, text embeddings.

    Attributes:
        profile: ``"tiny"`` or ``"arc2face"``.
        identity_dim: the identity vector length the ID encoder requires (512 for Arc2Face), or None.
        fingerprints: per-network ids (used to key the prompt-embedding cache).
        n_unet_evals: number of UNet forward calls so far (one call may hold a batch).
        lora: the LoRA inside the UNet and the scale every call applies (None: no LoRA).
    """

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler: DDIMScheduler
    tokenizer: object
    text_encoder: CLIPTextModel
    id_encoder: CLIPTextModel
    profile: str
    device: torch.device
    unet_dtype: torch.dtype = torch.float32
    identity_dim: int | None = None
    identity_seed: int = 0
    fingerprints: dict[str, str] = field(default_factory=dict)
    cache: PromptEmbeddingCache | None = None
    n_unet_evals: int = 0
    lora: LoraInfo | None = None
    vae_dtype: torch.dtype = torch.float32
    channels_last: bool = False
    graphed_unet: GraphedCall | None = None
    _alphas_cumprod: torch.Tensor | None = field(default=None, repr=False)  # ᾱ on ``device``, made once

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, config, device: torch.device | str = "cpu") -> "DiffusionPrior":
        """Build the prior named by ``config.models.prior`` (``tiny`` or ``arc2face``) on ``device``."""
        device = torch.device(device)
        models = config.models
        cache = PromptEmbeddingCache() if config.conditioning.cache_embeddings else None
        if models.prior == "tiny":
            prior = cls.tiny(seed=models.tiny_prior_seed, device=device, cache=cache,
                             half_precision=models.half_precision)
        elif models.prior == "arc2face":
            prior = cls.from_registry(device=device, half_precision=models.half_precision, cache=cache,
                                      lora=models.lora, lora_scale=models.lora_scale)
        else:
            raise PriorError(f"models.prior={models.prior!r} is not a prior; use 'arc2face' (real weights) or 'tiny'")
        return prior.set_speed(models.vae_precision, models.cuda_graphs, models.channels_last)

    @classmethod
    def tiny(cls, seed: int = 0, device: torch.device | str = "cpu", cache: PromptEmbeddingCache | None = None,
             half_precision: bool = False) -> "DiffusionPrior":
        """The offline profile: small random networks, each initialised from ``seed`` + a fixed offset."""
        parts = {}
        builders = [("unet", tiny_unet), ("vae", tiny_vae), ("text_encoder", tiny_text_encoder),
                    ("id_encoder", tiny_text_encoder)]
        for offset, (name, build) in enumerate(builders):
            with with_seed(seed * 10 + offset):
                parts[name] = build().eval()
        calibrate_latent_scale(parts["vae"])
        device = torch.device(device)
        prior = cls(scheduler=DDIMScheduler(**SD15_SCHEDULE), tokenizer=load_clip_tokenizer(), profile="tiny",
                    device=device, unet_dtype=diffusion_dtype(device, half_precision), identity_seed=seed,
                    cache=cache, **parts)
        prior.fingerprints = {"text_encoder": "tiny-" + parameters_fingerprint(prior.text_encoder),
                              "id_encoder": "tiny-" + parameters_fingerprint(prior.id_encoder)}
        return prior.to(prior.device)

    @classmethod
    def from_registry(cls, device: torch.device | str = "cpu", half_precision: bool = False,
                      cache: PromptEmbeddingCache | None = None, lora: str = "",
                      lora_scale: float = 1.0) -> "DiffusionPrior":
        """Arc2Face + SD-1.5 parts from the weights registry cache (raises ModelNotAvailable with the fix).

        Args:
            lora: a registry model name (``arc2face-lora``) or a ``.safetensors`` path; "" for none.
            lora_scale: the LoRA multiplier applied on every UNet call.
        """
        from ..weights import REGISTRY, model_path

        device = torch.device(device)
        dirs = {
            "unet": model_path("arc2face-unet") / "arc2face",
            "id_encoder": model_path("arc2face-encoder") / "encoder",
            "vae": model_path("sd15-vae") / "vae",
            "text_encoder": model_path("sd15-text-encoder") / "text_encoder",
        }
        tok_root = model_path("sd15-tokenizer")
        dtype = diffusion_dtype(device, half_precision)
        prior = cls(
            unet=UNet2DConditionModel.from_pretrained(str(dirs["unet"]), torch_dtype=dtype).eval(),
            vae=AutoencoderKL.from_pretrained(str(dirs["vae"]), torch_dtype=torch.float32).eval(),
            scheduler=DDIMScheduler.from_pretrained(str(tok_root), subfolder="scheduler"),
            tokenizer=load_clip_tokenizer(tok_root / "tokenizer"),
            text_encoder=load_clip_text_model(dirs["text_encoder"]),
            id_encoder=load_clip_text_model(dirs["id_encoder"]),
            profile="arc2face", device=device, unet_dtype=dtype, identity_dim=ARCFACE_DIM, cache=cache)
        registry_names = {"id_encoder": "arc2face-encoder", "text_encoder": "sd15-text-encoder"}
        for role, name in registry_names.items():
            files = [model_path(name) / f for f in REGISTRY[name].files()]
            prior.fingerprints[role] = f"{name}-{weights_fingerprint(files)}"
        if lora:
            path = model_path(lora) if lora in REGISTRY else Path(lora)
            prior.lora = load_lora(prior.unet, path, lora_scale, model=lora if lora in REGISTRY else "")
        return prior.to(device)

    def to(self, device: torch.device | str) -> "DiffusionPrior":
        """Move every network to ``device`` (dtypes stay: UNet ``unet_dtype``, the rest float32)."""
        self.device = torch.device(device)
        if self.unet.dtype != self.unet_dtype:
            self.unet.to(dtype=self.unet_dtype)
        for module in (self.unet, self.vae, self.text_encoder, self.id_encoder):
            module.to(self.device)
            module.requires_grad_(False)
        return self

    def set_speed(self, vae_precision: str = "fp32", cuda_graphs: bool = False,
                  channels_last: bool = False) -> "DiffusionPrior":
        """CUDA-only speed options (on the CPU nothing changes; see the module docstring). Each call sets
        all three; the encoder's weights are cast, so going back to fp32 keeps the rounding.

        Args:
            vae_precision: a :data:`VAE_PRECISIONS` name; the encoder's weights and activations (so its
                backward too) in that dtype, the decoder stays float32.
            cuda_graphs: replay every UNet pass as a CUDA graph (one per batch shape).
            channels_last: UNet and VAE encoder in the channels-last memory layout.
        """
        if vae_precision not in VAE_PRECISIONS:
            raise PriorError(f"models.vae_precision={vae_precision!r}; choose one of {', '.join(VAE_PRECISIONS)}")
        if self.device.type != "cuda":
            return self
        # fixed shapes: cuDNN times its convolution kernels once (the first iteration takes ~1 min on an H200)
        torch.backends.cudnn.benchmark = vae_precision != "fp32" or cuda_graphs or channels_last
        self.vae_dtype = VAE_PRECISIONS[vae_precision]
        encoder = [self.vae.encoder] + ([self.vae.quant_conv] if self.vae.quant_conv is not None else [])
        for module in encoder:
            module.to(dtype=self.vae_dtype)
        self.channels_last = channels_last
        layout = torch.channels_last if channels_last else torch.contiguous_format
        for module in (self.unet, *encoder):
            module.to(memory_format=layout)
        self.graphed_unet = GraphedCall(self._unet_pass) if cuda_graphs else None
        return self

    # ------------------------------------------------------------------ geometry of the latent space

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """ᾱ_t for t = 0..T-1, ``[T]`` float32 on the prior's device (copied there once)."""
        if self._alphas_cumprod is None or self._alphas_cumprod.device != self.device:
            self._alphas_cumprod = self.scheduler.alphas_cumprod.to(self.device, torch.float32)
        return self._alphas_cumprod

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def vae_scale_factor(self) -> int:
        """Image pixels per latent pixel (8 for SD's VAE and the tiny one)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def hidden_size(self) -> int:
        """Width D of the text embeddings and of the UNet's cross-attention."""
        return int(self.text_encoder.config.hidden_size)

    # ------------------------------------------------------------------ VAE

    def encode_images(self, images: torch.Tensor, latent_resolution: int | None = None) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [0, 1] -> scaled latents ``[B, 4, h, w]`` (differentiable).

        With ``latent_resolution``, images are first resized (bilinear, antialiased) to
        ``latent_resolution * vae_scale_factor`` pixels. The latent is the mean of the VAE posterior
        (deterministic), times the VAE's scaling factor.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W] in [0, 1], got shape {tuple(images.shape)}")
        if latent_resolution is not None:
            size = latent_resolution * self.vae_scale_factor
            if images.shape[-2:] != (size, size):
                images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                                       antialias=True)
        pixels = images.to(self.device, self.vae_dtype) * 2 - 1
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        posterior = self.vae.encode(pixels).latent_dist
        return posterior.mean.float() * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, 4, h, w]`` -> images ``[B, 3, 8h, 8w]`` in [0, 1]."""
        images = self.vae.decode(latents.float() / self.vae.config.scaling_factor).sample
        return (images * 0.5 + 0.5).clamp(0, 1)

    # ------------------------------------------------------------------ UNet

    @torch.no_grad()
    def predict_noise(self, latents: torch.Tensor, timesteps: torch.Tensor | int,
                      embeddings: torch.Tensor) -> torch.Tensor:
        """ε(x, t, c) ``[N, 4, h, w]`` float32 for latents ``[N, 4, h, w]``, timesteps (int or ``[N]``), embeddings ``[N, 77, D]``.

        Every call is one batched UNet evaluation and increments :attr:`n_unet_evals`. With a LoRA, the
        call runs at scale :attr:`lora` ``.scale`` (``cross_attention_kwargs={"scale": ...}``, as the
        released code does on every call, DDIM inversion included).
        """
        n = latents.shape[0]
        if embeddings.shape[0] != n:
            raise ValueError(f"{n} latents but {embeddings.shape[0]} embeddings; give one embedding per latent")
        if embeddings.shape[-1] != self.unet.config.cross_attention_dim:
            raise PriorError(f"embeddings have width {embeddings.shape[-1]} but the UNet expects "
                             f"{self.unet.config.cross_attention_dim}: they come from another prior")
        if isinstance(timesteps, int):  # a fill, not a host-to-device copy
            t = torch.full((n,), timesteps, dtype=torch.long, device=self.device)
        else:
            t = timesteps.to(self.device, torch.long).reshape(-1).expand(n).contiguous()
        latents = latents.to(self.device, self.unet_dtype)
        if self.channels_last:
            latents = latents.contiguous(memory_format=torch.channels_last)
        run = self.graphed_unet or self._unet_pass
        out = run(latents, t, embeddings.to(self.device, self.unet_dtype))
        self.n_unet_evals += 1
        return out.float()

    def _unet_pass(self, latents: torch.Tensor, timesteps: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """One UNet evaluation, the LoRA at its scale; tensors already on the device in the UNet's dtype."""
        extra = {"cross_attention_kwargs": {"scale": self.lora.scale}} if self.lora is not None else {}
        return self.unet(latents, timesteps, encoder_hidden_states=embeddings, **extra).sample

    # ------------------------------------------------------------------ text

    def _cached(self, role: str, prompt: str, compute, identity: torch.Tensor | None = None) -> torch.Tensor:
        if self.cache is None:
            return compute().float()
        return self.cache.get_or_compute(self.fingerprints[role], prompt, compute, identity).to(self.device)

    def encode_text(self, prompts: list[str] | str) -> torch.Tensor:
        """E_SD: ``[N, 77, D]`` plain CLIP embeddings of the prompts (cached on disk when enabled)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        return torch.stack([
            self._cached("text_encoder", p,
                         lambda p=p: encode_prompts(self.tokenizer, self.text_encoder, [p])[0]) for p in prompts])

    def identity_token(self, identity: torch.Tensor) -> IdentityToken:
        """The identity vector fitted to the ID encoder's width (:func:`fit_identity_to_hidden`)."""
        if identity.ndim != 1:
            raise ValueError(f"the identity must be a 1-D vector, got shape {tuple(identity.shape)}")
        if self.identity_dim is not None and identity.numel() != self.identity_dim:
            raise PriorError(
                f"the {self.profile} ID encoder needs the {self.identity_dim}-d ArcFace embedding, got a "
                f"{identity.numel()}-d vector (dlib's descriptor is 128-d); set models.identity=arcface, "
                "or use models.prior=tiny for the offline identity")
        return fit_identity_to_hidden(identity, int(self.id_encoder.config.hidden_size), seed=self.identity_seed)

    def encode_identity(self, identity: torch.Tensor, prompt: str = "photo of a id person") -> torch.Tensor:
        """c_default: ``[77, D]`` ID-injected embedding of ``prompt`` (Arc2Face ID encoder)."""
        token = self.identity_token(identity)
        return self._cached("id_encoder", prompt,
                            lambda: encode_with_identity(self.tokenizer, self.id_encoder, prompt, token),
                            identity=token.vector)

    def describe(self) -> str:
        """One line naming the profile and the networks' sizes."""
        count = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
        kind = ("small random networks built from code (seed %d): mechanics only, no face knowledge"
                % self.identity_seed if self.profile == "tiny" else "real Arc2Face / SD-1.5 weights")
        lora = (f", LoRA r={self.lora.rank} on {self.lora.unet_layers} layers at scale {self.lora.scale:g}"
                if self.lora is not None else ", no LoRA")
        return (f"{self.profile}: {kind}; UNet {count(self.unet):.2f}M ({str(self.unet_dtype).replace('torch.', '')}), "
                f"VAE {count(self.vae):.2f}M, text encoders {count(self.text_encoder):.2f}M + "
                f"{count(self.id_encoder):.2f}M, D={self.hidden_size}{lora}, device {self.device}")

    def manifest_entry(self) -> dict:
        """What a run manifest records about the prior: profile, UNet dtype, the LoRA and its scale, and
        for real weights each model's source and sha256 (:func:`sie3d.weights.provenance`)."""
        from ..weights import provenance

        entry = {"profile": self.profile, "unet_dtype": str(self.unet_dtype).replace("torch.", ""),
                 "lora": self.lora.to_manifest() if self.lora is not None else {"applied": False}}
        if self.profile == "arc2face":
            names = [*REGISTRY_MODELS, *([self.lora.model] if self.lora is not None and self.lora.model else [])]
            entry["weights"] = {name: provenance(name) for name in names}
        return entry


def _save_clip_text(model: CLIPTextModel, directory: Path, filename: str) -> None:
    """Config + weights under the hub's key names (``text_model.*``) as ``.safetensors`` or ``.bin``."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(str(directory))
    state = {_CLIP_PREFIX + k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if filename.endswith(".safetensors"):
        save_file(state, str(directory / filename), metadata={"format": "pt"})
    else:
        torch.save(state, directory / filename)


def save_in_registry_layout(prior: DiffusionPrior, home: str | Path | None = None) -> Path:
    """Write the prior's networks where the registry expects Arc2Face / SD-1.5 files under ``home``.

    Layout (``home/models/<registry name>/...``): ``arc2face-unet/arc2face``, ``arc2face-encoder/encoder``
    (``pytorch_model.bin``), ``sd15-vae/vae``, ``sd15-text-encoder/text_encoder``,
    ``sd15-tokenizer/{tokenizer,scheduler}``. Returns ``home``.
    """
    from ..weights import model_path, sie3d_home

    home = Path(home) if home is not None else sie3d_home()
    models = home / "models"
    prior.unet.save_pretrained(str(models / "arc2face-unet" / "arc2face"))
    prior.vae.save_pretrained(str(models / "sd15-vae" / "vae"))
    _save_clip_text(prior.text_encoder, models / "sd15-text-encoder" / "text_encoder", "model.safetensors")
    _save_clip_text(prior.id_encoder, models / "arc2face-encoder" / "encoder", "pytorch_model.bin")
    write_tokenizer_files(model_path("clip-bpe-vocab"), models / "sd15-tokenizer" / "tokenizer")
    prior.scheduler.save_config(str(models / "sd15-tokenizer" / "scheduler"))
    return home
