"""Arc2Face's LoRA: a tiny LoRA written the way diffusers' training scripts write one, loaded through the
registry and diffusers' loader, applied at ``models.lora_scale`` on every UNet call (inversion included);
the text encoders load in float32 whatever their config says; the LoRA download is checked against the
git blob id of the released file."""

import copy
import dataclasses
import functools
import hashlib
import json
import shutil
import subprocess

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from sie3d.config import GuidanceConfig, load_config
from sie3d.diffusion.guidance import IntervalScoreMatching
from sie3d.diffusion.lora import ADAPTER, LORA_FILE, SD15_TARGETS, add_random_lora, lora_layers, write_lora
from sie3d.diffusion.prior import DiffusionPrior, _save_clip_text, load_clip_text_model, save_in_registry_layout
from sie3d.weights import REGISTRY, ChecksumMismatch, download, model_path, provenance

pytestmark = pytest.mark.needs_offline_models

RANK = 2


@pytest.fixture(scope="module")
def tiny():
    return DiffusionPrior.tiny(seed=0)


@pytest.fixture(scope="module")
def lora_home(tiny, tmp_path_factory):
    """A model cache with the tiny networks in the Arc2Face / SD-1.5 layout and a tiny LoRA for the UNet."""
    home = tmp_path_factory.mktemp("home")
    bpe = model_path("clip-bpe-vocab")
    (home / "models" / "clip-bpe-vocab").mkdir(parents=True)
    shutil.copy(bpe, home / "models" / "clip-bpe-vocab" / bpe.name)
    save_in_registry_layout(tiny, home)
    donor = copy.deepcopy(tiny.unet)
    add_random_lora(donor, rank=RANK, seed=3, std=0.2)
    write_lora(donor, home / "models" / "arc2face-lora")
    return home


@pytest.fixture
def home(lora_home, monkeypatch):
    monkeypatch.setenv("SIE3D_HOME", str(lora_home))
    return lora_home


@functools.lru_cache(maxsize=None)
def prior_at(scale: float) -> DiffusionPrior:
    """The arc2face profile from the ``home`` cache, LoRA at ``scale`` (loaded once per scale)."""
    config = load_config(overrides=["models.prior=arc2face", "models.lora=arc2face-lora",
                                    f"models.lora_scale={scale}", "conditioning.cache_embeddings=false"])
    return DiffusionPrior.from_config(config, "cpu")


def test_the_file_has_diffusers_sd15_lora_keys(home, tiny):
    from diffusers.models.attention_processor import Attention

    state = load_file(home / "models" / "arc2face-lora" / LORA_FILE)
    n_attention = sum(isinstance(m, Attention) for m in tiny.unet.modules())  # attn1 + attn2 of each block
    assert n_attention == 8 and len(state) == n_attention * len(SD15_TARGETS) * 2  # down + up per target
    for key, tensor in state.items():
        assert key.startswith("unet.") and key.endswith((".lora.down.weight", ".lora.up.weight")), key
        assert RANK in tensor.shape


def test_scale_zero_is_the_base_unet_exactly(home, tiny):
    prior = prior_at(0.0)
    assert prior.lora is not None and prior.lora.unet_layers == 32 and prior.lora.rank == RANK
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    emb = tiny.encode_text(["front view", "side view"])
    assert torch.equal(prior.predict_noise(x, 321, emb), tiny.predict_noise(x, 321, emb))
    assert not torch.equal(prior_at(0.45).predict_noise(x, 321, emb), tiny.predict_noise(x, 321, emb))


def test_one_adapted_layer_is_w_x_plus_scale_times_up_down_x(home, tiny):
    """Against a dense reference built from the file's tensors: W x + b + s · up (down x) (alpha = r)."""
    state = load_file(home / "models" / "arc2face-lora" / LORA_FILE)
    name = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v"
    down, up = state[f"unet.{name}.lora.down.weight"], state[f"unet.{name}.lora.up.weight"]
    base = tiny.unet.get_submodule(name)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    emb = tiny.encode_text(["a", "b"])
    deltas = {}
    for scale in (0.0, 0.45, 1.0):
        prior = prior_at(scale)
        seen = []
        handle = prior.unet.get_submodule(name).register_forward_hook(lambda m, i, o: seen.append((i[0], o)))
        prior.predict_noise(x, 200, emb)
        handle.remove()
        (inputs, output), = seen
        reference = F.linear(inputs, base.weight, base.bias) + scale * F.linear(F.linear(inputs, down), up)
        torch.testing.assert_close(output, reference, rtol=1e-5, atol=1e-5)
        deltas[scale] = output - F.linear(inputs, base.weight, base.bias)
    assert deltas[0.0].abs().max() == 0
    assert deltas[1.0].abs().max() > 1e-3


def test_every_unet_call_of_an_ism_step_runs_at_the_lora_scale(home, tiny):
    prior = prior_at(0.45)
    layer = lora_layers(prior.unet)[0]
    scalings = []
    handle = layer.register_forward_pre_hook(lambda m, i: scalings.append(m.scaling[ADAPTER]))
    ism = IntervalScoreMatching(prior, GuidanceConfig(xs_inv_steps=3, latent_resolution=8))
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 4, 8, 8, generator=gen)
    noise = torch.randn(1, 4, 8, 8, generator=gen)
    before = prior.n_unet_evals
    trace = ism.invert(x0, noise, t=400, s=350, embedding=tiny.encode_text("")[0])
    handle.remove()
    assert trace.n_unet_evals == prior.n_unet_evals - before == 4  # 3 inversion hops + the target
    assert scalings == [pytest.approx(0.45)] * 4  # alpha = r: the adapter's own scaling is 1
    assert layer.scaling[ADAPTER] == 1.0  # restored after each call
    plain = IntervalScoreMatching(tiny, GuidanceConfig(xs_inv_steps=3, latent_resolution=8))
    base_trace = plain.invert(x0, noise, t=400, s=350, embedding=tiny.encode_text("")[0])
    assert not torch.equal(trace.x_s, base_trace.x_s)
    zero = IntervalScoreMatching(prior_at(0.0), GuidanceConfig(xs_inv_steps=3, latent_resolution=8))
    assert torch.equal(zero.invert(x0, noise, t=400, s=350, embedding=tiny.encode_text("")[0]).x_s, base_trace.x_s)


def test_manifest_records_the_lora_scale_and_the_weights(home, tiny):
    entry = prior_at(0.45).manifest_entry()
    assert entry["lora"]["applied"] is True and entry["lora"]["scale"] == 0.45
    assert entry["lora"]["model"] == "arc2face-lora" and entry["lora"]["text_encoder_keys"] == 0
    unet_file = entry["weights"]["arc2face-unet"]["files"]["arc2face/diffusion_pytorch_model.safetensors"]
    assert unet_file == {"sha256": REGISTRY["arc2face-unet"].sha256["arc2face/diffusion_pytorch_model.safetensors"],
                         "pinned": True}
    assert "arc2face-lora" in entry["weights"]
    assert tiny.manifest_entry()["lora"] == {"applied": False} and "weights" not in tiny.manifest_entry()
    assert "LoRA r=2 on 32 layers at scale 0.45" in prior_at(0.45).describe()


def test_text_encoders_load_in_float32_whatever_the_config_says(tmp_path, tiny):
    from transformers import CLIPTextModel

    _save_clip_text(tiny.id_encoder, tmp_path, "pytorch_model.bin")
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(dtype="float16", torch_dtype="float16")
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert CLIPTextModel.from_pretrained(str(tmp_path)).dtype == torch.float16  # transformers 5's default
    assert load_clip_text_model(tmp_path).dtype == torch.float32


def test_lora_download_checks_the_git_blob_and_records_its_sha256(tmp_path, monkeypatch):
    monkeypatch.setenv("SIE3D_HOME", str(tmp_path / "home"))
    released = tmp_path / LORA_FILE
    released.write_bytes(b"not really a LoRA, but bytes with a known git blob id")
    blob = subprocess.run(["git", "hash-object", str(released)], capture_output=True, text=True,
                          check=True).stdout.strip()
    spec = REGISTRY["arc2face-lora"]
    good = dataclasses.replace(spec, source=dataclasses.replace(spec.source, url=released.as_uri(), git_blob=blob))
    monkeypatch.setitem(REGISTRY, "arc2face-lora", good)
    path = download("arc2face-lora", progress=False)
    recorded = provenance("arc2face-lora")["files"][LORA_FILE]
    assert recorded == {"sha256": hashlib.sha256(released.read_bytes()).hexdigest(), "pinned": False}

    bad = dataclasses.replace(good, source=dataclasses.replace(good.source, git_blob="0" * 40))
    monkeypatch.setitem(REGISTRY, "arc2face-lora", bad)
    with pytest.raises(ChecksumMismatch, match="git blob"):
        download("arc2face-lora", progress=False, force=True)
    assert not path.exists()


@pytest.mark.gpu
def test_lora_on_a_half_precision_unet(home, tiny):
    config = load_config(overrides=["models.prior=arc2face", "models.half_precision=true", "models.lora_scale=0.45",
                                    "conditioning.cache_embeddings=false"])
    prior = DiffusionPrior.from_config(config, "cuda")
    assert prior.unet.dtype == torch.float16 and prior.lora.scale == 0.45
    x = torch.randn(2, 4, 8, 8, device="cuda")
    emb = prior.encode_text(["front view", "side view"])
    with_lora = prior.predict_noise(x, 300, emb)
    prior.lora = dataclasses.replace(prior.lora, scale=0.0)
    base = prior.predict_noise(x, 300, emb)
    reference = tiny.to("cuda").predict_noise(x, 300, emb)
    tiny.to("cpu")
    assert with_lora.dtype == torch.float32 and torch.isfinite(with_lora).all()
    assert (with_lora - base).abs().max() > 1e-3
    torch.testing.assert_close(base, reference, rtol=1e-2, atol=1e-2)  # fp16 UNet vs fp32 UNet
