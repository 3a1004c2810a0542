"""Full-size random stand-ins for the real diffusion weights, written in their exact on-disk layouts.

:func:`write_synthetic_weights` fills a model cache (``<home>/models/<registry name>/...``) with what
``sie3d weights download`` would put there for the Arc2Face / SD-1.5 prior, at the real sizes and
architectures but with random values (seeded; each tensor tiled from one pool of uniform values in PyTorch's
default initialisation range, :func:`_build`, so filling ~1.2 G parameters is a memory copy, not a random
generator):

==================  ===============================================================  ==============
registry name       files                                                            parameters
==================  ===============================================================  ==============
arc2face-unet       ``arc2face/config.json`` + ``diffusion_pytorch_model.safetensors``  859,520,964
arc2face-encoder    ``encoder/config.json`` + ``pytorch_model.bin`` (a pickle)          123,060,480
sd15-vae            ``vae/config.json`` + ``diffusion_pytorch_model.safetensors``        83,653,863
sd15-text-encoder   ``text_encoder/config.json`` + ``model.safetensors``                123,060,480
sd15-tokenizer      ``tokenizer/`` (vocab.json, merges.txt, 2 JSON) + ``scheduler/`` (PNDM config)
arc2face-lora       ``pytorch_lora_weights.safetensors`` (rank 4 on every attention's q, k, v, out)
arc2face-arcface    ``arcface.onnx``: ArcFace's input and output (``input.1`` [N, 3, 112, 112] -> [N, 512])   402,176
                    through a small random network, not its ResNet-100 (the ID vector's loader, not its cost)
==================  ===============================================================  ==============

The parameter counts are SD-1.5's published ones (:data:`PUBLISHED_PARAMETERS`). About 4.9 GB on disk;
each network is built, saved and freed in turn, so peak memory is about one UNet (3.4 GB).
Nothing here carries meaning: it exercises loaders, shapes, dtypes, memory and speed.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import torch

#: SD-1.5's published parameter counts (UNet, VAE, CLIP ViT-L/14 text encoder)
PUBLISHED_PARAMETERS = {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}
#: rank of the synthetic LoRA (diffusers' SD LoRA scripts default to 4)
LORA_RANK = 4

#: ``unet/config.json`` of SD-1.5 (Arc2Face's ``arc2face/config.json`` has the same architecture)
SD15_UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
#: ``vae/config.json`` of SD-1.5 (no ``scaling_factor``: diffusers' default 0.18215 applies)
SD15_VAE_CONFIG = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "norm_num_groups": 32, "out_channels": 3, "sample_size": 512, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
#: ``text_encoder/config.json`` of SD-1.5 (CLIP ViT-L/14's text tower; its historical bos/eos/pad ids kept)
SD15_TEXT_CONFIG = {
    "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
    "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": 768, "initializer_factor": 1.0,
    "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
    "model_type": "clip_text_model", "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1,
    "projection_dim": 768, "torch_dtype": "float32", "vocab_size": 49408,
}
#: ``scheduler/scheduler_config.json`` of SD-1.5 (a PNDM config; DDIMScheduler.from_pretrained keeps the betas)
SD15_SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "trained_betas": None,
}


#: length of the seeded pool of uniform values every synthetic tensor is tiled from
POOL_SIZE = 4_000_037


def _uniform_pool(seed: int) -> torch.Tensor:
    """``[2 * POOL_SIZE]`` float32: :data:`POOL_SIZE` seeded uniform values in [-1, 1), written twice so any
    window of up to :data:`POOL_SIZE` values starting inside the first copy is one slice."""
    pool = torch.rand(POOL_SIZE, generator=torch.Generator().manual_seed(seed), device="cpu") * 2 - 1
    return torch.cat([pool, pool])


def _tile_uniform(tensor: torch.Tensor, pool: torch.Tensor, start: int, bound: float) -> None:
    """Fill ``tensor`` (any shape) in place with ``bound`` × the pool read cyclically from ``start``."""
    flat = tensor.view(-1)
    for begin in range(0, flat.numel(), POOL_SIZE):
        length = min(POOL_SIZE, flat.numel() - begin)
        flat[begin:begin + length].copy_(pool[start:start + length])
    flat.mul_(bound)


def _build(factory, seed: int) -> torch.nn.Module:
    """``factory()`` built on the meta device (no random init), then given CPU storage filled cheaply
    with PyTorch's default initialisation ranges: each Linear / Conv weight and bias uniform in
    ±1/√fan_in, each Embedding uniform with std 0.02 (CLIP's initializer range), norms weight 1, bias 0.

    The uniform values are :func:`_uniform_pool`'s (seeded) read cyclically from a different start in each
    tensor: a memory copy instead of a random generator over ~1.2 G values. Only parameters are filled;
    a network with persistent buffers is refused (they would be saved uninitialised).
    """
    with torch.device("meta"):
        module = factory()
    module.to_empty(device="cpu")
    if len(module.state_dict()) != sum(1 for _ in module.parameters()):
        raise ValueError(f"{type(module).__name__} has persistent buffers; the synthetic writer fills parameters only")
    pool = _uniform_pool(seed)
    norms = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    with torch.no_grad():
        for index, (name, layer) in enumerate(module.named_modules()):
            if isinstance(layer, norms):
                layer.weight.fill_(1.0)
                layer.bias.zero_()
                continue
            for offset, parameter in enumerate(layer.parameters(recurse=False)):
                bound = 0.02 * 3 ** 0.5 if isinstance(layer, torch.nn.Embedding) else layer.weight[0].numel() ** -0.5
                _tile_uniform(parameter, pool, (index * 7919 + offset * 104729) % POOL_SIZE, bound)
    return module


def _free(*objects) -> None:
    del objects
    gc.collect()


def count_parameters(module: torch.nn.Module) -> int:
    """Parameters of ``module`` without any LoRA factors (the base network's count)."""
    return sum(p.numel() for name, p in module.named_parameters() if "lora_" not in name)


def write_synthetic_weights(home: str | Path, seed: int = 0, log=print) -> dict[str, int]:
    """Write the random full-size prior under ``home/models``; returns parameter counts per network.

    Needs the ``clip-bpe-vocab`` file (offline registry model) for the tokenizer files.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..weights import model_path
    from .lora import add_random_lora, write_lora
    from .prior import _save_clip_text
    from .tokenizer import write_tokenizer_files

    models = Path(home) / "models"
    counts: dict[str, int] = {}

    unet = _build(lambda: UNet2DConditionModel.from_config(SD15_UNET_CONFIG), seed)
    counts["unet"] = count_parameters(unet)
    unet.save_pretrained(str(models / "arc2face-unet" / "arc2face"))
    add_random_lora(unet, rank=LORA_RANK, seed=seed + 1)
    write_lora(unet, models / "arc2face-lora")
    log(f"[synthetic] UNet {counts['unet']:,} parameters + LoRA r={LORA_RANK} written", flush=True)
    _free(unet)

    vae = _build(lambda: AutoencoderKL.from_config(SD15_VAE_CONFIG), seed + 2)
    counts["vae"] = count_parameters(vae)
    vae.save_pretrained(str(models / "sd15-vae" / "vae"))
    _free(vae)

    for offset, (name, folder, filename) in enumerate([
            ("text_encoder", models / "sd15-text-encoder" / "text_encoder", "model.safetensors"),
            ("id_encoder", models / "arc2face-encoder" / "encoder", "pytorch_model.bin")]):
        encoder = _build(lambda: CLIPTextModel(CLIPTextConfig(**{k: v for k, v in SD15_TEXT_CONFIG.items()
                                                                  if k not in ("architectures", "model_type")})),
                         seed + 3 + offset)
        counts[name] = count_parameters(encoder)
        _save_clip_text(encoder, folder, filename)
        (folder / "config.json").write_text(json.dumps(SD15_TEXT_CONFIG, indent=2))
        _free(encoder)
    log(f"[synthetic] VAE {counts['vae']:,}, text encoders {counts['text_encoder']:,} + {counts['id_encoder']:,}",
        flush=True)

    write_tokenizer_files(model_path("clip-bpe-vocab"), models / "sd15-tokenizer" / "tokenizer")
    (models / "sd15-tokenizer" / "scheduler").mkdir(parents=True, exist_ok=True)
    (models / "sd15-tokenizer" / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(SD15_SCHEDULER_CONFIG, indent=2))
    counts["arcface"] = sum(a.size for a in write_synthetic_arcface(models / "arc2face-arcface" / "arcface.onnx",
                                                                    seed + 5))
    return counts


def write_synthetic_arcface(path: str | Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An ONNX recognizer with ArcFace's interface (``input.1`` ``[N, 3, 112, 112]`` -> ``683`` ``[N, 512]``):
    an 8×8 stride-8 convolution to 4 channels ``[4, 3, 8, 8]``, flatten, a dense layer ``[784, 512]``
    (random, seeded; returned). It lets the paper path's identity loader run without ArcFace's 261 MB
    file, and tests check the loader against numpy with it."""
    try:
        from onnx import TensorProto, helper, numpy_helper, save
    except ImportError:
        raise RuntimeError("writing the synthetic ArcFace needs the onnx package: pip install -e '.[insightface]'") from None

    rng = np.random.default_rng(seed)
    conv = rng.normal(0, 0.1, (4, 3, 8, 8)).astype(np.float32)
    dense = rng.normal(0, 0.1, (4 * 14 * 14, 512)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input.1", "w"], ["c"], strides=[8, 8], kernel_shape=[8, 8]),
         helper.make_node("Flatten", ["c"], ["f"], axis=1),
         helper.make_node("MatMul", ["f", "d"], ["683"])],
        "arcface_synthetic",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", 512])],
        initializer=[numpy_helper.from_array(conv, "w"), numpy_helper.from_array(dense, "d")])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what opset 13 needs; a newer onnx writes a newer IR than older onnxruntimes read
    save(model, str(path))
    return conv, dense
