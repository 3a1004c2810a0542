"""params/released-code.yaml on top of the paper preset: the interval warm-up of the released code (which
never acts with its warmup_iter 1), the widening camera ranges, and the values the audit found."""

import pytest
import torch

from sie3d.config import GuidanceConfig, load_config
from sie3d.diffusion.guidance import IntervalScoreMatching
from sie3d.render.cameras import CameraSampler

NEGATIVE = ("unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, low-resolution, "
            "gloomy, oversaturation, purple shadows, weird colors")


class _Schedule:  # the two things the guidance reads from a prior for timestep sampling
    num_train_timesteps = 1000


def test_released_code_delta_on_the_paper_preset():
    paper = load_config("params/paper.yaml")
    released = load_config("params/paper.yaml", "params/released-code.yaml")
    assert released.preset == "released-code" and released.train.iterations == 7000
    assert released.conditioning.negative_prompt == NEGATIVE and paper.conditioning.negative_prompt == ""
    assert released.conditioning.mode == "released-code" and released.loss.lambda_emotion == 0.0
    assert released.loss.lambda_ism == 4.0 * paper.loss.lambda_ism == 4.0 * released.train.batch_size / 4
    assert (released.guidance.delta_t, released.guidance.delta_t_start) == (50, 100)
    assert paper.models.lora == released.models.lora == "arc2face-lora"
    assert paper.models.lora_scale == released.models.lora_scale == 0.45
    assert released.cameras.fovy_widen_limits == [0.3, 0.7]


def test_the_released_warm_up_never_acts_and_a_longer_one_anneals_delta():
    paper = load_config("params/paper.yaml").guidance
    released = load_config("params/paper.yaml", "params/released-code.yaml").guidance
    a, b = IntervalScoreMatching(_Schedule(), paper), IntervalScoreMatching(_Schedule(), released)
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for iteration in (0, 1, 2, 1000):
        assert b.delta_at(iteration) == 50 and b.timestep_bounds(iteration) == (20, 500)
        assert a.sample_timesteps(iteration, gen_a) == b.sample_timesteps(iteration, gen_b)
    longer = IntervalScoreMatching(_Schedule(), GuidanceConfig(anneal=True, anneal_iters=100, delta_t_start=100))
    # rate 1 - (i + 1)/100: 0.99 -> 50 + ceil(49.5); 0.5 -> 50 + 25; 0 -> 50
    assert [longer.delta_at(i) for i in (0, 49, 99, 500)] == [100, 75, 50, 50]
    with pytest.raises(ValueError, match="delta_t_start"):
        IntervalScoreMatching(_Schedule(), GuidanceConfig(delta_t_start=0))


def test_released_camera_ranges_widen_every_1500_iterations():
    released = CameraSampler(load_config("params/paper.yaml", "params/released-code.yaml").cameras, 64)
    paper = CameraSampler(load_config("params/paper.yaml").cameras, 64)
    # fovy: lo x 0.8 not below 0.3, hi x 1.1 not above 0.7
    expected = {0: (0.4, 0.6), 1499: (0.4, 0.6), 1500: (0.32, 0.66), 3000: (0.3, 0.7), 6000: (0.3, 0.7)}
    for iteration, bounds in expected.items():
        assert released.fovy_bounds(iteration) == pytest.approx(bounds)
        assert paper.fovy_bounds(iteration) == pytest.approx((0.4, 0.6))
    assert released.radius_bounds(1500) == pytest.approx((5.32, 5.9))
    assert released.radius_bounds(6000) == pytest.approx((4.6, 5.9))  # 5.6 x 0.95^4 = 4.56, floor 4.6
    fovy = released.sample(2000, iteration=3000, generator=torch.Generator().manual_seed(0)).cameras.fovy
    assert 0.3 <= fovy.min() < 0.32 and 0.68 < fovy.max() <= 0.7
