"""ISM and SDS: the update against a slow reference on a UNet with a known ε, DDIM steps against
diffusers, the DDIM inversion round trip on the tiny prior, batching, gradients into the images."""

import math

import pytest
import torch
from diffusers import DDIMScheduler

from sie3d.config import ConditioningConfig, GuidanceConfig
from sie3d.diffusion.conditioning import build_conditioning
from sie3d.diffusion.guidance import (
    IntervalScoreMatching,
    ScoreDistillation,
    ddim_step,
    ddim_walk,
    make_guidance,
    perp_neg,
    reparameterised_loss,
)
from sie3d.diffusion.prior import SD15_SCHEDULE, DiffusionPrior

SCHEDULE = DDIMScheduler(**SD15_SCHEDULE)
ABAR = SCHEDULE.alphas_cumprod.double()


class KnownEpsPrior:
    """A prior whose ε is a known function: ε(x, t, c) = 0.1·x + 0.001·t + sin(c·(channel + 1)).

    c is the constant value of each row's embedding; latents are the images with the red channel
    repeated, mapped to [-1, 1]. Also plays the text/ID encoder (constant embeddings per prompt).
    """

    VALUES = {"": 0.3, "front view": 1.0, "side view": 2.0, "back view": 3.0, "neutral expression": 4.0}

    def __init__(self):
        self.num_train_timesteps = 1000
        self.device = torch.device("cpu")
        self.alphas_cumprod = ABAR
        self.n_unet_evals = 0
        self.calls = []  # (batch size, t)

    def encode_text(self, prompts):
        return torch.stack([torch.full((77, 2), self.VALUES.get(p, 0.7), dtype=torch.float64) for p in prompts])

    def encode_identity(self, identity, prompt):
        return torch.full((77, 2), 1.5, dtype=torch.float64)

    def encode_images(self, images, latent_resolution=None):
        return torch.cat([images, images[:, :1]], dim=1) * 2 - 1

    @staticmethod
    def eps(x, t, c):
        channel = torch.arange(1, 5, dtype=x.dtype).reshape(1, 4, 1, 1)
        return 0.1 * x + 0.001 * t + torch.sin(c.reshape(-1, 1, 1, 1) * channel)

    def predict_noise(self, x, t, embeddings):
        self.n_unet_evals += 1
        self.calls.append((x.shape[0], int(t)))
        return self.eps(x, t, embeddings[:, 0, 0])


def reference_ism_grad(x0, noise, t, s, cfg, cameras, uncond, inversion, method="ism"):
    """Slow reference: the settings.md procedure written out view by view with scalar formulas."""
    eps = KnownEpsPrior.eps
    a = lambda k: ABAR[k]  # noqa: E731
    if method == "ism":
        start = max(s - cfg.xs_delta_t * cfg.xs_inv_steps, 0)
        x = a(start).sqrt() * x0 + (1 - a(start)).sqrt() * noise
        current = start
        while current < s:
            nxt = min(current + cfg.xs_delta_t, s)
            e = eps(x, current, torch.tensor(inversion))
            x = a(nxt).sqrt() * (x - (1 - a(current)).sqrt() * e) / a(current).sqrt() + (1 - a(nxt)).sqrt() * e
            current = nxt
        target = eps(x, s, torch.tensor(inversion))
        x_t = a(t).sqrt() * (x - (1 - a(s)).sqrt() * target) / a(s).sqrt() + (1 - a(t)).sqrt() * target
    else:
        target = noise
        x_t = a(t).sqrt() * x0 + (1 - a(t)).sqrt() * noise
    grads = []
    for b in range(x0.shape[0]):
        xb = x_t[b:b + 1]
        e_uncond = eps(xb, t, torch.tensor(uncond))
        values = cameras.embeddings[b, :, 0, 0]
        deltas = [eps(xb, t, values[k]) - e_uncond for k in range(len(values))]
        main = deltas[0]
        aggregate = main.clone()
        for k in range(1, len(deltas)):
            perp = deltas[k] - (deltas[k] * main).sum() / (main * main).sum() * main
            aggregate = aggregate + cameras.weights[b, k] * perp
        guided = e_uncond + cfg.guidance_scale * aggregate
        grads.append(cfg.weight * math.sqrt((1 - a(t)) / a(t)) * (guided - target[b:b + 1]))
    return torch.cat(grads)


def _known_setup(**guidance_changes):
    prior = KnownEpsPrior()
    cond_cfg = ConditioningConfig(emotions=["neutral"], accessories=[])
    conditioning = build_conditioning(prior, torch.ones(3), cond_cfg)
    cfg = GuidanceConfig(xs_inv_steps=4, **guidance_changes)
    return prior, conditioning, cfg


# ----------------------------------------------------------------------------------- pure pieces


def test_ddim_step_matches_diffusers_denoising():
    scheduler = DDIMScheduler(**SD15_SCHEDULE)
    scheduler.set_timesteps(20)  # steps of 50: 951, 901, ...
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
    t = int(scheduler.timesteps[5])
    expected = scheduler.step(eps, t, x, eta=0.0).prev_sample
    ours = ddim_step(x, eps, SCHEDULE.alphas_cumprod[t], SCHEDULE.alphas_cumprod[t - 50])
    assert torch.allclose(ours, expected, atol=1e-5)
    # with a fixed ε, inversion and denoising are exact inverses
    back = ddim_step(ddim_step(x, eps, ABAR[100], ABAR[400]), eps, ABAR[400], ABAR[100])
    assert torch.allclose(back.float(), x, atol=1e-5)


def test_perp_neg_by_hand():
    delta = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [3.0, 0.0]],   # view 0: main, oblique, parallel
                          [[0.0, 2.0], [1.0, 1.0], [0.0, 0.0]]])  # view 1
    weights = torch.tensor([[1.0, -2.0, -2.0], [1.0, -0.5, -2.0]])
    # view 0: perp([1,1] to [1,0]) = [0,1] -> [1,0] - 2*[0,1]; the parallel negative adds nothing
    # view 1: perp([1,1] to [0,2]) = [1,0] -> [0,2] - 0.5*[1,0]
    assert torch.allclose(perp_neg(delta, weights), torch.tensor([[1.0, -2.0], [-0.5, 2.0]]))


def test_reparameterised_loss_gradient_and_value():
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(3, 4, 2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(3, 4, 2, 2, generator=gen, dtype=torch.float64)
    loss = reparameterised_loss(latents, grad)
    loss.backward()
    assert torch.allclose(latents.grad, grad / 3)
    assert loss.item() == pytest.approx(0.5 * grad.square().sum().item() / 3, rel=1e-9)


# ----------------------------------------------------------------------------------- ISM / SDS on a known ε


@pytest.mark.parametrize("method", ["ism", "sds"])
def test_update_equals_the_formula_on_a_known_unet(method):
    prior, conditioning, cfg = _known_setup(method=method)
    guidance = make_guidance(prior, cfg)
    images = torch.rand(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    azimuths = [20.0, 150.0]
    out = guidance(images, conditioning, azimuths, iteration=0, generator=torch.Generator().manual_seed(7))

    # replay the documented draws: t, then the noise, then the shared offset
    gen = torch.Generator().manual_seed(7)
    t = int(torch.randint(20, 500, (1,), generator=gen))
    noise = torch.randn(2, 4, 4, 4, generator=gen) + 0.1 * torch.randn(1, 4, 1, 1, generator=gen)
    s = max(t - 50, 0)
    assert out["t"] == t and out.get("s") == (s if method == "ism" else None)

    latents = KnownEpsPrior().encode_images(images)
    grad = reference_ism_grad(latents.detach(), noise.double(), t, s, cfg, conditioning.for_cameras(azimuths),
                              uncond=0.3, inversion=0.3, method=method)
    assert out["grad_norm"].item() == pytest.approx(grad.norm().item(), rel=1e-6)
    assert out[f"loss_{method}"].item() == pytest.approx(0.5 * grad.square().sum().item() / 2, rel=1e-6)
    out[f"loss_{method}"].backward()
    expected_image_grad, = torch.autograd.grad((latents * grad).sum() / 2, images)
    assert torch.allclose(images.grad, expected_image_grad, atol=1e-10)

    hops = len(range(max(s - 200, 0), s, 50))
    expected_calls = ([2] * (hops + 1) if method == "ism" else []) + [2 * 4]  # last: 2 views x (1 + K=3)
    assert [b for b, _ in prior.calls] == expected_calls and out["n_unet_evals"] == len(expected_calls)


@pytest.mark.parametrize("s, grid", [(337, [137, 187, 237, 287, 337]), (170, [0, 50, 100, 150, 170]),
                                     (0, [0])])
def test_inversion_hops_are_capped_and_end_at_s(s, grid):
    prior, _, cfg = _known_setup()  # xs_inv_steps = 4, xs_delta_t = 50
    ism = IntervalScoreMatching(prior, cfg)
    trace = ism.invert(torch.zeros(1, 4, 2, 2, dtype=torch.float64), torch.zeros(1, 4, 2, 2, dtype=torch.float64),
                       s + 50, s, torch.full((77, 2), 0.3, dtype=torch.float64))
    assert trace.path == grid + [s + 50]
    assert [t for _, t in prior.calls] == grid  # ε at every hop start, then the target at s
    assert trace.n_unet_evals == len(grid)


def test_timestep_sampling_and_annealing():
    prior, _, cfg = _known_setup()
    ism = IntervalScoreMatching(prior, cfg)
    gen = torch.Generator().manual_seed(0)
    pairs = [ism.sample_timesteps(0, gen) for _ in range(400)]
    assert min(t for t, _ in pairs) >= 20 and max(t for t, _ in pairs) < 500
    assert all(s == max(t - 50, 0) for t, s in pairs)
    annealed = IntervalScoreMatching(prior, GuidanceConfig(anneal=True, anneal_start=0.98, anneal_iters=1500))
    # warm-up rate 1 - (i + 1)/1500: 1499/1500 at i = 0 (t_max 979.68), 1/2 at i = 749, 0 from i = 1499 on
    assert [annealed.timestep_bounds(i) for i in (0, 749, 1499, 9000)] == [(20, 979), (20, 740), (20, 500), (20, 500)]
    assert ism.timestep_bounds(0) == ism.timestep_bounds(10_000) == (20, 500)


@pytest.mark.parametrize("changes, message", [
    ({"method": "vsd"}, "guidance.method"), ({"t_range": [0.5, 0.2]}, "t_range"),
    ({"delta_t": 0}, "delta_t"), ({"xs_inv_steps": -1}, "xs_inv_steps"),
    ({"anneal": True, "anneal_start": 0.3}, "anneal_start"), ({"t_range": [0.0201, 0.0205]}, "no integer"),
])
def test_bad_guidance_config_is_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        make_guidance(KnownEpsPrior(), GuidanceConfig(**changes))


def test_inputs_are_checked():
    prior, conditioning, cfg = _known_setup()
    guidance = make_guidance(prior, cfg, conditioning.cfg)
    images = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="one azimuth per image"):
        guidance(images, conditioning, [0.0], 0)
    with pytest.raises(TypeError, match="build_conditioning"):
        guidance(images, torch.zeros(77, 2), [0.0, 0.0], 0)
    with pytest.raises(ValueError, match="another conditioning config"):
        guidance(images, conditioning.retarget(expression="happy"), [0.0, 0.0], 0)
    assert isinstance(make_guidance(prior, GuidanceConfig(method="sds")), ScoreDistillation)


# ----------------------------------------------------------------------------------- the tiny prior


@pytest.fixture(scope="module")
def tiny():
    return DiffusionPrior.tiny(seed=0)


@pytest.fixture(scope="module")
def tiny_conditioning(tiny):
    identity = torch.randn(128, generator=torch.Generator().manual_seed(0))  # dlib-sized offline identity
    return build_conditioning(tiny, identity, ConditioningConfig(cache_embeddings=False))


@pytest.mark.needs_offline_models
def test_ddim_inversion_then_denoising_returns_to_the_start(tiny, tiny_conditioning):
    gen = torch.Generator().manual_seed(0)
    x0 = tiny.encode_images(torch.rand(2, 3, 64, 64, generator=gen)).detach()
    noise = torch.randn(x0.shape, generator=gen)
    errors = {}
    for hop in (10, 2):
        ism = IntervalScoreMatching(tiny, GuidanceConfig(xs_delta_t=hop, xs_inv_steps=1000))
        trace = ism.invert(x0, noise, t=100 + hop, s=100, embedding=tiny_conditioning.inversion)
        assert trace.path == [*range(0, 101, hop), 100 + hop]
        back = ddim_walk(tiny, trace.x_t, trace.path[::-1], tiny_conditioning.inversion)
        scale = trace.x_start.norm()
        errors[hop] = ((back - trace.x_start).norm() / scale).item()
        assert ((trace.x_t - trace.x_start).norm() / scale).item() > 0.05  # the path really moved
    assert errors[10] < 5e-3, errors
    # DDIM inversion is first-order accurate: 5x smaller hops give a ~5x smaller round-trip error
    assert 3.0 < errors[10] / errors[2] < 8.0, errors


@pytest.mark.needs_offline_models
@pytest.mark.parametrize("method", ["ism", "sds"])
def test_gradients_reach_the_images_through_the_vae_deterministically(tiny, tiny_conditioning, method):
    guidance = make_guidance(tiny, GuidanceConfig(method=method, xs_inv_steps=4, latent_resolution=8))
    results = []
    for _ in range(2):
        images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1), requires_grad=True)
        out = guidance(images, tiny_conditioning, torch.tensor([0.0, 100.0]), 3, torch.Generator().manual_seed(5))
        out[f"loss_{method}"].backward()
        assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
        results.append((out[f"loss_{method}"].item(), out["grad_norm"].item(), out["t"], images.grad))
    assert results[0][:3] == results[1][:3] and torch.equal(results[0][3], results[1][3])


@pytest.mark.needs_offline_models
def test_guided_pass_is_one_batched_unet_call(tiny, tiny_conditioning, monkeypatch):
    guidance = make_guidance(tiny, GuidanceConfig(xs_inv_steps=4, latent_resolution=8))
    sizes = []
    original = tiny.predict_noise
    monkeypatch.setattr(tiny, "predict_noise", lambda x, t, e: sizes.append(x.shape[0]) or original(x, t, e))
    out = guidance(torch.rand(4, 3, 64, 64), tiny_conditioning, [0, 45, 120, -170], 0, torch.Generator().manual_seed(2))
    assert sizes[-1] == 16 and set(sizes[:-1]) == {4} and out["n_unet_evals"] == len(sizes)


# ----------------------------------------------------------------------------------- the benchmark


def test_expected_unet_calls_at_the_paper_settings_by_hand():
    from sie3d.bench.ism import expected_unet_calls

    ism = IntervalScoreMatching(KnownEpsPrior(), GuidanceConfig())  # defaults = paper settings
    # t = 20..50 (31 values): s = 0, no hop -> 2 calls; t = 51..499: s = 1..449 -> ceil(s / 50) hops + 2.
    # sum of ceil(s/50) over s = 1..449 is 50·(1+...+8) + 49·9 = 2241
    assert expected_unet_calls(ism) == pytest.approx((31 * 2 + 2241 + 449 * 2) / 480)  # 6.67


@pytest.mark.needs_offline_models
def test_bench_ism_runs(capsys):
    from sie3d.cli import main

    assert main(["bench", "ism", "--steps", "2", "--batch", "1"]) == 0
    out = capsys.readouterr().out
    assert "ism:" in out and "sds:" in out and "expected mean over the t range 6.67" in out


@pytest.mark.needs_offline_models
def test_fit_image_is_reproducible_and_ism_sds_share_the_draws(tiny, tiny_conditioning):
    from sie3d.diffusion.guidance import fit_image

    start = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    runs = {}
    for method in ("ism", "sds", "ism"):
        guidance = make_guidance(tiny, GuidanceConfig(method=method, xs_inv_steps=4, latent_resolution=8))
        history = fit_image(guidance, tiny_conditioning, start, iterations=4, lr=0.1, seed=11, snapshot_every=2)
        if method in runs:
            assert history.loss == runs[method].loss and torch.equal(history.image, runs[method].image)
        runs[method] = history
    assert runs["ism"].t == runs["sds"].t  # the same timestep draws
    assert sorted(runs["ism"].snapshots) == [0, 2, 4]
    assert (runs["ism"].image - start).abs().max() > 1e-3  # the pixels moved
