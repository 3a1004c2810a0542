"""Arc2Face's LoRA (the "augmented Arc2Face" of Arc2Avatar / SIE3D): load it, apply it, write one.

The released codes load ``guidance/lora_weights/pytorch_lora_weights.safetensors`` into the Arc2Face
UNet with diffusers' ``load_lora_weights`` and pass ``cross_attention_kwargs={"scale": 0.45}`` on every
UNet call. Here the same file goes through the same diffusers code path
(:class:`diffusers.loaders.StableDiffusionLoraLoaderMixin`'s ``lora_state_dict`` and
``load_lora_into_unet``, on the peft backend) and :meth:`sie3d.diffusion.prior.DiffusionPrior.predict_noise`
passes the scale on every call. With the peft backend, diffusers' ``apply_lora_scale`` wrapper of
``UNet2DConditionModel.forward`` multiplies each adapted layer's scaling by ``scale`` for the call and
restores it afterwards, so one adapted layer computes ``W x + scale · (alpha / r) · B A x``.

A diffusers LoRA file holds ``unet.<module>.lora.down.weight`` ``[r, in]`` and ``...lora.up.weight``
``[out, r]`` (the layout :func:`write_lora` produces, as diffusers' training scripts do); text-encoder
keys (``text_encoder.*``) are counted, reported and not applied (where the released code would apply
them is unknown; ``shared/reference/settings.md``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

#: adapter name of Arc2Face's LoRA inside the UNet
ADAPTER = "arc2face"
#: file name diffusers' ``save_lora_weights`` writes and the released code loads
LORA_FILE = "pytorch_lora_weights.safetensors"
#: target modules of diffusers' SD-1.5 UNet LoRA scripts (every attention's q, k, v and output projection)
SD15_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
#: where the released codes keep the file (repository path)
RELEASED_PATH = "guidance/lora_weights/" + LORA_FILE


class LoraError(RuntimeError):
    """The LoRA file or the peft backend is not usable (names the problem and the fix)."""


@dataclass(frozen=True)
class LoraInfo:
    """What was loaded and how it is applied (recorded in run manifests).

    Attributes:
        file: the ``.safetensors`` file.
        scale: the multiplier passed on every UNet call (``models.lora_scale``).
        unet_layers: number of UNet linear layers that carry the adapter.
        rank: LoRA rank r (largest over layers).
        text_encoder_keys: ``text_encoder.*`` tensors in the file (not applied).
        model: the registry name the file came from ("" for a plain path).
    """

    file: str
    scale: float
    unet_layers: int
    rank: int
    text_encoder_keys: int
    model: str = ""
    adapter: str = ADAPTER

    def to_manifest(self) -> dict:
        return {"applied": True, **asdict(self)}


def require_peft_backend() -> None:
    """Raise :class:`LoraError` unless diffusers runs LoRA on the peft backend."""
    from diffusers.utils import USE_PEFT_BACKEND

    if not USE_PEFT_BACKEND:
        raise LoraError("diffusers has no peft backend here, so a LoRA scale would be ignored; "
                        "fix: pip install 'peft==0.21.2' (a dependency of sie3d)")


def lora_layers(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The peft LoRA layers inside ``module`` (each wraps one base ``nn.Linear``)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


def read_lora(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None, dict | None]:
    """(state dict, network alphas, adapter metadata) of a LoRA file, read by diffusers' own reader."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    path = Path(path)
    if not path.is_file():
        raise LoraError(f"no LoRA file at {path}; fetch it with: sie3d weights download arc2face-lora")
    state, alphas, metadata = StableDiffusionLoraLoaderMixin.lora_state_dict(
        str(path.parent), weight_name=path.name, return_lora_metadata=True)
    if not state or not all("lora" in key for key in state):
        raise LoraError(f"{path} is not a diffusers LoRA file (every key must contain 'lora')")
    return state, alphas, metadata


def load_lora(unet, path: str | Path, scale: float, model: str = "") -> LoraInfo:
    """Inject the LoRA of ``path`` into ``unet`` (adapter :data:`ADAPTER`); returns what was loaded.

    The scale is not baked in: pass ``cross_attention_kwargs={"scale": scale}`` on each call.
    """
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    require_peft_backend()
    state, alphas, metadata = read_lora(path)
    unet_keys = [k for k in state if k.startswith("unet.")]
    if not unet_keys:
        raise LoraError(f"{path} holds no unet.* LoRA weights (keys look like {next(iter(state))!r})")
    StableDiffusionLoraLoaderMixin.load_lora_into_unet(
        {k: v for k, v in state.items() if k.startswith("unet.")}, alphas, unet, adapter_name=ADAPTER,
        metadata=metadata)
    layers = lora_layers(unet)
    rank = max(int(m.r[ADAPTER]) for m in layers)
    text_keys = sum(k.startswith("text_encoder.") for k in state)
    return LoraInfo(file=str(path), scale=float(scale), unet_layers=len(layers), rank=rank,
                    text_encoder_keys=text_keys, model=model)


def add_random_lora(unet, rank: int = 4, targets: tuple[str, ...] = SD15_TARGETS, seed: int = 0,
                    std: float = 0.02) -> None:
    """Give ``unet`` a LoRA adapter (:data:`ADAPTER`) on ``targets`` with random A and B (seeded).

    ``std`` is the standard deviation of both factors; the adapter's alpha equals its rank (scaling 1).
    """
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets)), adapter_name=ADAPTER)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(unet):
            for factor in (layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight):
                factor.copy_(torch.randn(factor.shape, generator=generator, device="cpu") * std)


def write_lora(unet, directory: str | Path) -> Path:
    """Save ``unet``'s :data:`ADAPTER` the way diffusers' LoRA training scripts do; returns the file.

    ``get_peft_model_state_dict`` → ``convert_state_dict_to_diffusers`` →
    ``StableDiffusionLoraLoaderMixin.save_lora_weights`` (``unet.*.lora.down/up.weight`` keys).
    """
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    directory = Path(directory)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name=ADAPTER))
    StableDiffusionLoraLoaderMixin.save_lora_weights(str(directory), unet_lora_layers=layers,
                                                    weight_name=LORA_FILE, safe_serialization=True)
    return directory / LORA_FILE
