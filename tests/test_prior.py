"""The diffusion prior: the tiny profile, the real-weights loader (on tiny weights saved in the registry's
layout), Arc2Face ID injection, the identity adapter and the prompt-embedding cache."""

import copy
import dataclasses
import shutil

import pytest
import skimage.data
import torch

from sie3d.config import ConfigError, load_config
from sie3d.diffusion.prior import DiffusionPrior, PriorError, save_in_registry_layout
from sie3d.diffusion.text_encoders import (
    PromptEmbeddingCache,
    encode_prompts,
    encode_with_identity,
    fit_identity_to_hidden,
)
from sie3d.diffusion.tokenizer import TokenizerError
from sie3d.weights import REGISTRY, ModelNotAvailable, model_path

pytestmark = pytest.mark.needs_offline_models

REAL_MODELS = ("arc2face-unet", "arc2face-encoder", "sd15-vae", "sd15-text-encoder", "sd15-tokenizer")


@pytest.fixture(scope="module")
def tiny():
    return DiffusionPrior.tiny(seed=0)


@pytest.fixture
def fake_cache(tiny, tmp_path, monkeypatch):
    """A model cache holding the tiny networks in the Arc2Face / SD-1.5 layout (plus the BPE vocab)."""
    bpe = model_path("clip-bpe-vocab")
    home = tmp_path / "home"
    (home / "models" / "clip-bpe-vocab").mkdir(parents=True)
    shutil.copy(bpe, home / "models" / "clip-bpe-vocab" / bpe.name)
    monkeypatch.setenv("SIE3D_HOME", str(home))
    save_in_registry_layout(tiny, home)
    return home


def test_tiny_profile_is_seeded_and_leaves_the_global_rng_alone(tiny):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    again = DiffusionPrior.tiny(seed=0)
    assert torch.equal(torch.rand(3), expected_next)
    for a, b in zip(tiny.unet.parameters(), again.unet.parameters()):
        assert torch.equal(a, b)
    other = DiffusionPrior.tiny(seed=1)
    assert not torch.equal(next(tiny.unet.parameters()), next(other.unet.parameters()))
    assert tiny.profile == "tiny" and tiny.vae_scale_factor == 8 and tiny.hidden_size == 32


def test_tiny_vae_scaling_gives_unit_std_latents(tiny):
    # like SD's 0.18215, the tiny VAE's scaling factor is chosen so that image latents have std ~1
    photo = torch.tensor(skimage.data.astronaut()).permute(2, 0, 1)[None].float() / 255
    photo = torch.nn.functional.interpolate(photo, size=(64, 64), mode="area")
    latents = tiny.encode_images(photo)
    assert 0.7 < latents.std().item() < 1.4


def test_registry_layout_loads_through_the_real_weights_path(tiny, fake_cache):
    for name in REAL_MODELS:  # exactly the files the registry lists
        root = fake_cache / "models" / name
        assert all((root / f).is_file() for f in REGISTRY[name].files()), name
    assert (fake_cache / "models/arc2face-encoder/encoder/pytorch_model.bin").is_file()

    config = load_config(overrides=["models.prior=arc2face", "models.lora=", "conditioning.cache_embeddings=false"])
    loaded = DiffusionPrior.from_config(config, "cpu")
    assert loaded.profile == "arc2face" and loaded.identity_dim == 512

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    emb = tiny.encode_text(["front view", "side view"])
    assert torch.equal(loaded.encode_text(["front view", "side view"]), emb)
    assert torch.equal(loaded.predict_noise(x, 321, emb), tiny.predict_noise(x, 321, emb))
    images = torch.rand(2, 3, 64, 64, generator=gen)
    assert torch.equal(loaded.encode_images(images), tiny.encode_images(images))
    arcface = torch.randn(512, generator=gen)
    assert torch.equal(loaded.encode_identity(arcface), tiny.encode_identity(arcface))
    assert torch.equal(loaded.alphas_cumprod, tiny.alphas_cumprod)


def test_missing_real_weights_name_the_download_command(sie3d_home):
    config = load_config(overrides=["models.prior=arc2face"])
    with pytest.raises(ModelNotAvailable, match="sie3d weights download arc2face-unet"):
        DiffusionPrior.from_config(config, "cpu")
    with pytest.raises(ConfigError, match="models.prior: unknown name 'sd21'; choose one of arc2face, tiny"):
        load_config(overrides=["models.prior=sd21"])  # a params file fails when it loads
    built_in_code = dataclasses.replace(config, models=dataclasses.replace(config.models, prior="sd21"))
    with pytest.raises(PriorError, match="models.prior='sd21'"):
        DiffusionPrior.from_config(built_in_code, "cpu")


def test_truncated_text_encoder_is_an_error_not_a_random_init(fake_cache):
    from safetensors.torch import load_file, save_file

    path = fake_cache / "models/sd15-text-encoder/text_encoder/model.safetensors"
    state = load_file(path)
    save_file({k: v for k, v in state.items() if "layers.1." not in k}, path, metadata={"format": "pt"})
    with pytest.raises(PriorError, match="lacks"):
        DiffusionPrior.from_registry()


def test_two_token_tokenizer_folder_is_refused(fake_cache):
    for name in ("vocab.json", "merges.txt"):
        path = fake_cache / "models/sd15-tokenizer/tokenizer" / name
        path.write_text('{"a": 0, "b": 1}' if name == "vocab.json" else "#version: 0.2\n")
    with pytest.raises(TokenizerError, match="has 4 tokens, not CLIP's 49408"):
        DiffusionPrior.from_registry()


def test_half_precision_applies_to_the_unet_on_cuda_only(fake_cache):
    prior = DiffusionPrior.from_registry(device="cpu", half_precision=True)
    assert prior.unet_dtype == torch.float32 and prior.vae.dtype == torch.float32


@pytest.mark.gpu
def test_half_precision_on_cuda(fake_cache):
    prior = DiffusionPrior.from_registry(device="cuda", half_precision=True)
    assert prior.unet.dtype == torch.float16 and prior.vae.dtype == torch.float32
    assert DiffusionPrior.tiny(device="cuda", half_precision=True).unet.dtype == torch.float16
    images = torch.rand(2, 3, 64, 64, device="cuda", requires_grad=True)
    latents = prior.encode_images(images)
    eps = prior.predict_noise(latents.detach(), 100, prior.encode_text(["", "a"]))
    assert eps.dtype == torch.float32 and torch.isfinite(eps).all()


def test_speed_options_change_nothing_on_the_cpu_and_refuse_unknown_precisions():
    prior = DiffusionPrior.tiny(seed=0)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0), device="cpu")
    embeddings = prior.encode_text(["", "a"])
    before = prior.predict_noise(latents, 100, embeddings)
    prior.set_speed("bf16", cuda_graphs=True, channels_last=True)
    assert prior.graphed_unet is None and prior.vae_dtype == torch.float32 and not prior.channels_last
    assert torch.equal(prior.predict_noise(latents, 100, embeddings), before)
    with pytest.raises(PriorError, match="fp32, bf16, fp16"):
        prior.set_speed("int8")


@pytest.mark.gpu
def test_cuda_graph_replays_match_eager_passes_and_the_vae_precisions():
    """CUDA graphs replay the same kernels: the UNet's output equals the eager pass to fp16 rounding, for
    both batch shapes of an ISM step (a graph each); a low-precision VAE encoder stays near float32's."""
    prior = DiffusionPrior.tiny(seed=0, device="cuda", half_precision=True)
    embeddings = prior.encode_text(["", "a", "b", "c"])
    generator = torch.Generator(device="cpu").manual_seed(0)
    small = torch.randn(1, 4, 8, 8, generator=generator, device="cpu").cuda()
    large = torch.randn(4, 4, 8, 8, generator=generator, device="cpu").cuda()
    images = torch.rand(2, 3, 64, 64, generator=generator, device="cpu").cuda()
    eager = [prior.predict_noise(small, 300, embeddings[:1]), prior.predict_noise(large, 300, embeddings)]
    latents_fp32 = prior.encode_images(images)
    prior.set_speed("bf16", cuda_graphs=True, channels_last=True)
    for _ in range(2):  # capture, then replay
        graphed = [prior.predict_noise(small, 300, embeddings[:1]), prior.predict_noise(large, 300, embeddings)]
    assert len(prior.graphed_unet.graphs) == 2
    for a, b in zip(graphed, eager):
        assert torch.allclose(a, b, rtol=1e-2, atol=1e-2)
    latents_bf16 = prior.encode_images(images)
    assert latents_bf16.dtype == torch.float32
    assert float((latents_bf16 - latents_fp32).norm() / latents_fp32.norm()) < 3e-2


# ----------------------------------------------------------------------------------- VAE and UNet


def test_encode_images_resizes_and_passes_gradients(tiny):
    images = torch.rand(2, 3, 96, 96, requires_grad=True)
    latents = tiny.encode_images(images, latent_resolution=8)
    assert latents.shape == (2, 4, 8, 8)
    latents.square().sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert tiny.decode_latents(latents.detach()).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        tiny.encode_images(torch.rand(3, 64, 64))


def test_predict_noise_counts_calls_and_checks_shapes(tiny):
    before = tiny.n_unet_evals
    eps = tiny.predict_noise(torch.randn(3, 4, 8, 8), torch.tensor([1, 2, 3]), tiny.encode_text(["a", "b", "c"]))
    assert eps.shape == (3, 4, 8, 8) and tiny.n_unet_evals == before + 1
    with pytest.raises(ValueError, match="one embedding per latent"):
        tiny.predict_noise(torch.randn(2, 4, 8, 8), 5, tiny.encode_text(["a"]))
    with pytest.raises(PriorError, match="another prior"):
        tiny.predict_noise(torch.randn(1, 4, 8, 8), 5, torch.zeros(1, 77, 768))


# ----------------------------------------------------------------------------------- identity


def test_id_injection_equals_an_encoder_whose_id_row_is_the_identity(tiny):
    token = fit_identity_to_hidden(torch.randn(20), tiny.hidden_size)
    injected = encode_with_identity(tiny.tokenizer, tiny.id_encoder, "photo of a id person", token)
    # independent reference: write the vector into the embedding table row of "id" and encode normally
    reference_encoder = copy.deepcopy(tiny.id_encoder)
    (id_row,) = tiny.tokenizer.encode("id", add_special_tokens=False)
    with torch.no_grad():
        reference_encoder.get_input_embeddings().weight[id_row] = token.vector
    reference = encode_prompts(tiny.tokenizer, reference_encoder, ["photo of a id person"])[0]
    assert injected.shape == (77, 32) and torch.allclose(injected, reference, atol=1e-6)
    plain = encode_prompts(tiny.tokenizer, tiny.id_encoder, ["photo of a id person"])[0]
    assert torch.allclose(injected[:4], plain[:4])  # the causal encoder: tokens before `id` are unchanged
    assert not torch.allclose(injected[4:], plain[4:])
    with pytest.raises(ValueError, match="no 'id' token"):
        encode_with_identity(tiny.tokenizer, tiny.id_encoder, "photo of a person", token)


def test_identity_zero_pad_for_arcface_sizes():
    v = torch.randn(512)
    token = fit_identity_to_hidden(3.0 * v, 768)
    assert token.method == "zero-pad" and token.input_dim == 512
    assert torch.allclose(token.vector[:512], v / v.norm(), atol=1e-6) and torch.all(token.vector[512:] == 0)
    assert token.vector.norm().item() == pytest.approx(1.0, abs=1e-6)


def test_identity_projection_for_narrow_encoders():
    v = torch.randn(128)
    token = fit_identity_to_hidden(v, 32, seed=0)
    assert token.method == "projection" and token.vector.shape == (32,)
    assert token.vector.norm().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(token.vector, fit_identity_to_hidden(5.0 * v, 32, seed=0).vector, atol=1e-7)  # scale-free
    assert torch.equal(token.vector, fit_identity_to_hidden(v, 32, seed=0).vector)  # a fixed matrix
    assert not torch.allclose(token.vector, fit_identity_to_hidden(v, 32, seed=1).vector)
    other = torch.randn(128)  # distinct identities stay distinct
    assert not torch.allclose(token.vector, fit_identity_to_hidden(other, 32, seed=0).vector)
    with pytest.raises(ValueError, match="zero"):
        fit_identity_to_hidden(torch.zeros(8), 32)
    with pytest.raises(ValueError, match="1-D"):
        fit_identity_to_hidden(torch.zeros(2, 8), 32)


def test_arc2face_profile_requires_the_512d_arcface_vector(fake_cache):
    prior = DiffusionPrior.from_registry()
    with pytest.raises(PriorError, match="512-d ArcFace.*128-d"):
        prior.encode_identity(torch.randn(128))
    assert prior.identity_token(torch.randn(512)).method == "projection"  # the tiny weights are 32 wide


# ----------------------------------------------------------------------------------- cache


def test_prompt_cache_keys_on_model_prompt_and_identity(tmp_path):
    cache = PromptEmbeddingCache(tmp_path)
    calls = []

    def compute(value):
        return lambda: calls.append(value) or torch.full((77, 4), value)

    assert cache.get_or_compute("m1", "front view", compute(1.0))[0, 0] == 1.0
    assert cache.get_or_compute("m1", "front view", compute(2.0))[0, 0] == 1.0  # read back, not computed
    assert cache.get_or_compute("m2", "front view", compute(3.0))[0, 0] == 3.0
    assert cache.get_or_compute("m1", "side view", compute(4.0))[0, 0] == 4.0
    assert cache.get_or_compute("m1", "id", compute(5.0), identity=torch.ones(3))[0, 0] == 5.0
    assert cache.get_or_compute("m1", "id", compute(6.0), identity=torch.zeros(3))[0, 0] == 6.0
    assert calls == [1.0, 3.0, 4.0, 5.0, 6.0] and (cache.hits, cache.misses) == (1, 5)


def test_prior_uses_the_cache_transparently(tiny, tmp_path):
    cached = copy.copy(tiny)
    cached.cache = PromptEmbeddingCache(tmp_path)
    first = cached.encode_text(["front view", "happy expression"])
    second = cached.encode_text(["front view", "happy expression"])
    assert torch.equal(first, tiny.encode_text(["front view", "happy expression"])) and torch.equal(first, second)
    identity = torch.randn(128)
    assert torch.equal(cached.encode_identity(identity), tiny.encode_identity(identity))
    assert torch.equal(cached.encode_identity(identity), tiny.encode_identity(identity))
    assert cached.cache.misses == 3 and cached.cache.hits == 3
