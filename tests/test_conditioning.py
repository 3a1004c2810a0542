"""Paper eq 2, 4, 5, 6, the hierarchy in both modes, Perp-Neg view weights and the CFG batch order,
against hand-computed numbers."""

import math

import pytest
import torch

from sie3d.config import ConditioningConfig
from sie3d.diffusion.conditioning import (
    attribute_blend,
    build_conditioning,
    cfg_batch,
    cosine_similarity_matrix,
    intensity_blend,
    perp_neg_view_mix,
    split_cfg,
    view_blend,
    wrap_azimuth,
)

# ----------------------------------------------------------------------------------- the equations


def test_eq2_view_blend_by_hand():
    c_default = torch.tensor([[2.0, -1.0], [0.5, 4.0]])
    e_view = torch.tensor([[-1.0, 3.0], [1.5, 0.0]])
    # 0.9 * c_default + 0.1 * e_view, element by element
    expected = torch.tensor([[1.7, -0.6], [0.6, 3.6]])
    assert torch.allclose(view_blend(c_default, e_view, 0.9), expected)
    assert torch.equal(view_blend(c_default, e_view, 1.0), c_default)


def test_eq4_eq5_attribute_blend_by_hand():
    base = torch.tensor([1.0, 2.0, 3.0])
    e_attr = torch.tensor([6.0, -3.0, 0.0])
    # 0.8 * base + 0.2 * e_attr
    assert torch.allclose(attribute_blend(base, e_attr, 0.2), torch.tensor([2.0, 1.0, 2.4]))
    assert torch.equal(attribute_blend(base, e_attr, 0.0), base)


def test_eq6_intensity_blend_by_hand():
    neutral = torch.tensor([1.0, -2.0])
    target = torch.tensor([3.0, 2.0])
    # 0.2 * neutral + 0.8 * target
    assert torch.allclose(intensity_blend(neutral, target, 0.8), torch.tensor([2.6, 1.2]))
    assert torch.equal(intensity_blend(neutral, target, 0.0), neutral)
    assert torch.equal(intensity_blend(neutral, target, 1.0), target)


@pytest.mark.parametrize("fn", [view_blend, attribute_blend, intensity_blend])
def test_blend_factors_outside_unit_interval_are_refused(fn):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fn(torch.zeros(2), torch.ones(2), 1.5)


def test_cosine_similarity_matrix_by_hand():
    a, b, c = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, -3.0]])
    r = 1 / math.sqrt(2)
    expected = torch.tensor([[1.0, r, 0.0], [r, 1.0, -r], [0.0, -r, 1.0]])
    assert torch.allclose(cosine_similarity_matrix([a, b, c]), expected, atol=1e-6)


# ----------------------------------------------------------------------------------- Perp-Neg weights


@pytest.mark.parametrize("azimuth, pair, r, negatives, weights", [
    (0.0, ("front", "side"), 1.0, ("front", "side"), (0.0, -2.0)),
    (45.0, ("front", "side"), 0.5, ("front", "side"), (-2 * math.exp(-1.0), -2 * math.exp(-5.0))),
    (-45.0, ("front", "side"), 0.5, ("front", "side"), (-2 * math.exp(-1.0), -2 * math.exp(-5.0))),
    (81.0, ("front", "side"), 0.1, ("front", "side"), (-2 * math.exp(-0.2), 0.0)),
    (9.0, ("front", "side"), 0.9, ("front", "side"), (0.0, -2 * math.exp(-1.0))),
    (90.0, ("side", "back"), 1.0, ("side", "front"), (0.0, -2.0)),
    (135.0, ("side", "back"), 0.5, ("side", "front"), (-math.exp(-5.0), -2.0)),
    (180.0, ("side", "back"), 0.0, ("side", "front"), (-1.0, -2.0)),
    (-180.0, ("side", "back"), 0.0, ("side", "front"), (-1.0, -2.0)),
    (270.0, ("front", "side"), 0.0, ("front", "side"), (-2.0, 0.0)),  # = -90
])
def test_perp_neg_view_mix_by_hand(azimuth, pair, r, negatives, weights):
    mix = perp_neg_view_mix(azimuth, negative_weight=-2.0, front_decay=2.0, side_decay=10.0)
    assert mix.pair == pair and mix.negatives == negatives
    assert mix.r == pytest.approx(r)
    assert mix.weights == pytest.approx(weights)


def test_view_mix_is_continuous_across_the_sides():
    for side in (90.0, -90.0):
        inward = math.copysign(1e-6, side)
        a, b = perp_neg_view_mix(side - inward), perp_neg_view_mix(side + inward)  # front / back hemisphere
        # on both sides of the boundary the positive is ~side and the front is negated with w
        assert a.r == pytest.approx(0.0, abs=1e-6) and b.r == pytest.approx(1.0, abs=1e-6)
        weight_of = lambda m, view: dict(zip(m.negatives, m.weights))[view]  # noqa: E731
        for view in ("front", "side"):
            assert weight_of(a, view) == pytest.approx(weight_of(b, view), abs=1e-5)


def test_wrap_azimuth():
    assert [wrap_azimuth(a) for a in (0, 190, -190, 360, 540, -180)] == [0, -170, 170, 0, -180, -180]


# ----------------------------------------------------------------------------------- CFG order


def test_cfg_batch_order_is_slot_major_and_split_inverts_it():
    uncond = torch.tensor([[100.0], [101.0]])  # [B=2, 1]
    cond = torch.tensor([[[0.0], [1.0], [2.0]], [[10.0], [11.0], [12.0]]])  # [B=2, K=3, 1]: view*10 + slot
    batch = cfg_batch(uncond, cond)
    # rows k*B + b: uncond of every view, then slot 1 (positive) of every view, then each negative
    assert batch.flatten().tolist() == [100, 101, 0, 10, 1, 11, 2, 12]
    u, c = split_cfg(batch, views=2)
    assert torch.equal(u, uncond) and torch.equal(c, cond)
    with pytest.raises(ValueError, match="disagree"):
        cfg_batch(uncond, cond[:1])


# ----------------------------------------------------------------------------------- the hierarchy


class ScalarPrior:
    """encode_text / encode_identity returning constant [77, 2] tensors whose value we choose."""

    VALUES = {"front view": 1.0, "side view": 2.0, "back view": 3.0, "neutral expression": 4.0,
              "happy expression": 5.0, "wearing glasses": 6.0, "none": 7.0, "": 0.0}

    def __init__(self):
        self.calls = []

    def _value(self, prompt):
        return self.VALUES.get(prompt, 0.5 + (sum(map(ord, prompt)) % 97) / 10)

    def encode_text(self, prompts):
        self.calls.append(list(prompts))
        return torch.stack([torch.full((77, 2), self._value(p)) for p in prompts])

    def encode_identity(self, identity, prompt):
        assert prompt == "photo of a id person"
        return torch.full((77, 2), 10.0)


def _cond(**changes):
    cfg = ConditioningConfig(emotions=["neutral", "happy"], accessories=["wearing glasses"])
    for key, value in changes.items():
        setattr(cfg, key, value)
    return build_conditioning(ScalarPrior(), torch.ones(4), cfg)


def _values(cams):
    return cams.embeddings[..., 0, 0].tolist(), cams.weights.tolist()


def test_paper_chain_by_hand():
    cond = _cond(expression="happy", accessory="wearing glasses")  # b 0.9, γ 0.2, η 0.8
    stages = cond.chain("front")
    # c_front = .9*10 + .1*1 = 9.1; neutral = .8*9.1 + .2*4 = 8.08; happy = .8*9.1 + .2*5 = 8.28
    # expression = .2*8.08 + .8*8.28 = 8.24; with glasses = .8*8.24 + .2*6 = 7.792
    # final = .2*8.24 + .8*7.792 = 7.8816
    expected = {"view": 9.1, "neutral": 8.08, "target": 8.28, "expression": 8.24, "final": 7.8816}
    for key, value in expected.items():
        assert stages[key][0, 0].item() == pytest.approx(value), key
    # side: 9.2 -> 8.16 / 8.36 -> 8.32 -> 7.856 -> 1.664 + 6.2848 = 7.9488
    assert cond.final("side")[0, 0].item() == pytest.approx(7.9488)
    embeddings, weights = _values(cond.for_cameras([0.0, 45.0]))
    assert embeddings[0] == pytest.approx([7.8816, 7.8816, 7.9488])
    assert embeddings[1][0] == pytest.approx(0.5 * 7.8816 + 0.5 * 7.9488)
    assert weights[0] == pytest.approx([1.0, 0.0, -2.0])
    assert weights[1] == pytest.approx([1.0, -2 * math.exp(-1), -2 * math.exp(-5)])


def test_paper_chain_without_accessory_stops_at_the_expression():
    cond = _cond(expression="happy", accessory="")
    assert cond.final("front")[0, 0].item() == pytest.approx(8.24)


def test_released_code_arrangement_by_hand():
    cond = _cond(mode="released-code", expression="happy", accessory="wearing glasses")
    # entries blend from c_default=10: none = .8*10 + .2*7 = 9.4, glasses = 8 + 1.2 = 9.2,
    # positive = .2*9.4 + .8*9.2 = 9.24; expression stage = .2*(8+.8) + .8*(8+1) = 8.96
    embeddings, weights = _values(cond.for_cameras([0.0]))
    assert embeddings[0] == pytest.approx([9.24, 9.4, 8.96])
    assert weights[0] == pytest.approx([1.0, 0.0, -0.6])  # η = 0.8 >= 0.7: neutral slot off

    cond = _cond(mode="released-code", expression="happy", accessory="", eta_expr=0.5)
    # positive .5*8.8 + .5*9 = 8.9, neutral 8.8 (η < 0.7: weight -1), view stage c_front = 9.1 (-0.6)
    embeddings, weights = _values(cond.for_cameras([0.0]))
    assert embeddings[0] == pytest.approx([8.9, 8.8, 9.1])
    assert weights[0] == pytest.approx([1.0, -1.0, -0.6])
    # at 45° the view stage is the azimuth mix .5*9.1 + .5*9.2 and the view negatives are gone
    embeddings, weights = _values(cond.for_cameras([45.0]))
    assert embeddings[0][2] == pytest.approx(9.15) and weights[0] == pytest.approx([1.0, -1.0, -0.6])


def test_without_semantic_embedding_only_views_remain_in_both_modes():
    for mode in ("paper", "released-code"):
        cond = _cond(mode=mode, semantic_embedding=False, expression="happy", accessory="wearing glasses")
        embeddings, weights = _values(cond.for_cameras([0.0]))
        assert embeddings[0] == pytest.approx([9.1, 9.1, 9.2]) and weights[0] == pytest.approx([1.0, 0.0, -2.0])


def test_dictionaries_take_any_emotion_and_free_text_accessory():
    prior = ScalarPrior()
    cfg = ConditioningConfig(expression="contempt", accessory="a red scarf")
    cond = build_conditioning(prior, torch.ones(4), cfg)
    assert len(prior.calls) == 1  # one batched encoder call for every prompt the config names
    assert {"contempt expression", "a red scarf", "front view", ""} <= set(prior.calls[0])
    assert set(cond.expressions) == set(cfg.emotions) and set(cond.accessories) == set(cfg.accessories)
    value = prior._value("contempt expression")
    assert cond.expression_embedding("contempt")[0, 0].item() == pytest.approx(0.8 * 10 + 0.2 * value)
    cond.expression_embedding("bored")  # a word no list holds: encoded on demand
    assert prior.calls[-1] == ["bored expression"]
    assert set(cond.views) == {"front", "side", "back"}


def test_retarget_changes_the_chain_only():
    cond = _cond(expression="happy")
    neutral = cond.retarget(expression="neutral")
    assert neutral.final("front")[0, 0].item() == pytest.approx(8.08)
    assert cond.final("front")[0, 0].item() == pytest.approx(8.24)
    assert neutral.c_default is cond.c_default


@pytest.mark.parametrize("changes, message", [
    ({"mode": "paper-ish"}, "conditioning.mode"),
    ({"eta_expr": 1.2}, "eta_expr"),
    ({"expression": " "}, "conditioning.expression"),
    ({"expression_template": "expression"}, "needs a"),
    ({"view_prompts": {"front": "front view"}}, "lacks"),
])
def test_bad_config_is_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        _cond(**changes)
