"""The trainer: bit-identical resume, NaN recovery, Ctrl-C checkpoint, the expression-only emotion route."""

import math

import pytest
import torch
from skimage.data import astronaut

from sie3d.config import load_config
from sie3d.subject import initial_avatar, make_subject, prepare_subject
from sie3d.train.checkpoint import latest_checkpoint, load_checkpoint
from sie3d.train.metrics_log import read_metrics
from sie3d.train.divergence import TrainingDiverged
from sie3d.train.trainer import AvatarTrainer

TINY = ["render.resolution=24", "render.frontal_resolution=128", "train.iterations=4", "train.batch_size=1",
        "train.checkpoint_every=2", "train.log_every=1", "cameras.random_flip=true"]


@pytest.fixture(scope="module")
def subject(repo_root_module):
    config = load_config(repo_root_module / "params/quick.yaml")
    return make_subject([astronaut()], config.models, ["astronaut"])


@pytest.fixture(scope="module")
def repo_root_module():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


def _trainer(repo_root, subject, run_dir, extra=()):
    config = load_config(repo_root / "params/quick.yaml", overrides=[*TINY, *extra])
    device = torch.device("cpu")
    prepared = prepare_subject(subject, config, device)
    return AvatarTrainer(config, prepared, initial_avatar(prepared, config, device), run_dir, device,
                         log=lambda *_: None)


def _state(trainer):
    return [p.detach().clone() for p in trainer.gaussians.parameters()] + [trainer.expression.detach().clone()]


@pytest.mark.slow
def test_resume_reproduces_an_uninterrupted_run(tmp_path, repo_root_module, subject):
    straight = _trainer(repo_root_module, subject, tmp_path / "a")
    straight.fit()
    first_half = _trainer(repo_root_module, subject, tmp_path / "b")
    first_half.fit(iterations=2)
    assert load_checkpoint(latest_checkpoint(tmp_path / "b"))["iteration"] == 2
    resumed = _trainer(repo_root_module, subject, tmp_path / "b")
    assert resumed.resume() and resumed.iteration == 2
    resumed.fit()
    for a, b in zip(_state(straight), _state(resumed)):
        assert torch.equal(a, b)
    logged = [r["iteration"] for r in read_metrics(tmp_path / "b")]
    assert logged == [0, 1, 2, 3]  # nothing logged twice
    a_losses = [r["loss_total"] for r in read_metrics(tmp_path / "a")]
    assert a_losses == [r["loss_total"] for r in read_metrics(tmp_path / "b")]


def test_resume_refuses_other_params(tmp_path, repo_root_module, subject):
    trainer = _trainer(repo_root_module, subject, tmp_path, ["train.iterations=1"])
    trainer.fit()
    other = _trainer(repo_root_module, subject, tmp_path, ["train.iterations=1", "guidance.delta_t=40"])
    with pytest.raises(ValueError, match="different params"):
        other.resume()


def test_nan_loss_skips_the_step_lowers_lr_once_then_fails(tmp_path, repo_root_module, subject, monkeypatch):
    trainer = _trainer(repo_root_module, subject, tmp_path)
    before = _state(trainer)
    compute = trainer.compute_losses

    def poisoned(iteration):
        losses, diagnostics, extra = compute(iteration)
        losses["ref"] = losses["ref"] * float("nan")
        return losses, diagnostics, extra

    monkeypatch.setattr(trainer, "compute_losses", poisoned)
    record = trainer.step(0)
    assert record["nan_recovery"] == 1.0 and record["lr_scale"] == 0.5
    assert all(torch.equal(a, b) for a, b in zip(before, _state(trainer)))  # nothing moved
    assert trainer.learning_rates(0)["color"] == pytest.approx(0.5 * load_config(
        repo_root_module / "params/quick.yaml").optim.lr_color_init)
    with pytest.raises(TrainingDiverged, match="again after lowering the learning rate"):
        trainer.step(1)


def test_nan_parameter_after_the_step_is_undone(tmp_path, repo_root_module, subject, monkeypatch):
    trainer = _trainer(repo_root_module, subject, tmp_path)
    trainer.step(0)
    before = _state(trainer)
    original_step = trainer.optimizer.step

    def corrupting_step(*args, **kwargs):
        original_step(*args, **kwargs)
        with torch.no_grad():
            trainer.gaussians.params["xyz"][0, 0] = float("inf")

    monkeypatch.setattr(trainer.optimizer, "step", corrupting_step)
    record = trainer.step(1)
    assert record["nan_recovery"] == 1.0
    after = _state(trainer)
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_ctrl_c_saves_a_checkpoint(tmp_path, repo_root_module, subject, monkeypatch):
    trainer = _trainer(repo_root_module, subject, tmp_path)
    step = trainer.step

    def interrupted(iteration):
        if iteration == 1:
            raise KeyboardInterrupt
        return step(iteration)

    monkeypatch.setattr(trainer, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert load_checkpoint(latest_checkpoint(tmp_path))["iteration"] == 1


def test_emotion_loss_moves_only_the_expression_coefficients(tmp_path, repo_root_module, subject):
    trainer = _trainer(repo_root_module, subject, tmp_path)
    assert trainer.config.loss.emotion_moves == "expression"
    losses, _, _ = trainer.compute_losses(0)
    trainer._backward({"emotion": losses["emotion"]}, 0)
    assert trainer.expression.grad is not None and trainer.expression.grad.abs().sum() > 0
    for param in trainer.gaussians.parameters():
        assert param.grad is None or param.grad.abs().sum() == 0
    trainer.optimizer.zero_grad(set_to_none=True)
    others = {k: v for k, v in losses.items() if k not in ("emotion", "expression_prior")}
    trainer._backward(others, 0)
    assert trainer.expression.grad is None or trainer.expression.grad.abs().sum() == 0
    assert trainer.gaussians.params["color"].grad.abs().sum() > 0
    trainer.optimizer.zero_grad(set_to_none=True)  # the expression prior reaches the coefficients only
    trainer._backward({"expression_prior": losses["expression_prior"]}, 0)
    assert trainer.expression.grad.abs().sum() > 0
    assert all(param.grad is None or param.grad.abs().sum() == 0 for param in trainer.gaussians.parameters())


def test_paper_route_lets_the_emotion_loss_reach_colours(tmp_path, repo_root_module, subject):
    trainer = _trainer(repo_root_module, subject, tmp_path, ["loss.emotion_moves=all"])
    losses, _, _ = trainer.compute_losses(0)
    trainer._backward({"emotion": losses["emotion"]}, 0)
    assert trainer.gaussians.params["color"].grad.abs().sum() > 0


def test_photo_expression_is_fitted_and_the_target_starts_there(tmp_path, repo_root_module, subject):
    trainer = _trainer(repo_root_module, subject, tmp_path)
    coeffs = dict(zip(trainer.template.expression_names, trainer.photo_expression.tolist()))
    assert coeffs["smile"] > 0.5  # the astronaut smiles
    assert torch.equal(trainer.expression.detach(), trainer.photo_expression)
    assert math.isfinite(trainer.step(0)["loss_total"])


def test_a_step_lifts_the_target_blendshapes_to_their_prototype_floor(tmp_path, repo_root_module, subject):
    from sie3d.avatar.template import EXPRESSION_PROTOTYPES

    trainer = _trainer(repo_root_module, subject, tmp_path, ["conditioning.expression=surprise",
                                                             "conditioning.eta_expr=0.5"])
    names = trainer.template.expression_names
    start = dict(zip(names, trainer.expression.detach().tolist()))
    assert start["mouth_open"] < 0.5 * EXPRESSION_PROTOTYPES["surprise"]["mouth_open"]  # the photo smiles
    trainer.step(0)
    after = dict(zip(names, trainer.expression.detach().tolist()))
    for name, weight in EXPRESSION_PROTOTYPES["surprise"].items():
        assert after[name] >= 0.5 * weight - 1e-6, name
    assert after["smile"] < start["smile"]  # unused by surprise: pulled toward zero, not floored


def test_expression_prior_pulls_unused_blendshapes_to_zero_and_floors_used_ones_at_the_prototype():
    from sie3d.avatar.template import BUILTIN_EXPRESSIONS
    from sie3d.avatar.template import EXPRESSION_PROTOTYPES
    from sie3d.train.losses import expression_prior_target, loss_expression_prior

    names = list(BUILTIN_EXPRESSIONS)  # smile, frown, mouth_open, lips_pressed, brow_raise, brow_furrow, eyes_wide
    target, used = expression_prior_target(names, "neutral", 0.8)
    assert not used.any() and not target.any()
    target, used = expression_prior_target(names, "surprise", 0.5)
    assert [n for n, u in zip(names, used) if u] == ["mouth_open", "brow_raise", "eyes_wide"]
    assert torch.allclose(target, torch.tensor([0.0, 0.0, 0.4, 0.0, 0.5, 0.0, 0.3]))  # η × (AU26, AU1+2, AU5)
    assert not expression_prior_target(names, "surprise", 0.0)[1].any()  # η = 0: the neutral face
    for prototype in EXPRESSION_PROTOTYPES.values():
        assert set(prototype) <= set(names) and all(0 < w <= 1 for w in prototype.values())
    _, used = expression_prior_target(["exp_0", "exp_1"], "neutral")  # not the built-in head: no prior
    assert float(loss_expression_prior(torch.tensor([0.7, 0.2]), used)) == 0.0

    # by hand: smile² + frown² (unused by surprise); mouth, brows and eyes are free of the loss
    coefficients = torch.tensor([1.0, 0.5, 0.2, 0.0, 0.9, 0.0, 0.3], requires_grad=True)
    value = loss_expression_prior(coefficients, expression_prior_target(names, "surprise", 0.5)[1])
    assert float(value.detach()) == pytest.approx(1.0 + 0.25)
    value.backward()
    assert torch.allclose(coefficients.grad, torch.tensor([2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]))


@pytest.mark.parametrize("overrides, floored", [(["loss.lambda_emotion=0"], True),
                                                (["loss.lambda_expression_prior=0"], False)])
def test_the_prototype_floor_is_its_own_part_of_the_expression(tmp_path, repo_root_module, subject, overrides,
                                                               floored):
    """Without the emotion loss the FACS prototype floor still lifts the target's blendshapes (and nothing
    else moves them); without the floor the first step leaves them below it."""
    from sie3d.avatar.template import EXPRESSION_PROTOTYPES

    trainer = _trainer(repo_root_module, subject, tmp_path, ["conditioning.expression=surprise",
                                                             "conditioning.eta_expr=0.5", *overrides])
    assert (trainer.classifier is None) == floored
    trainer.step(0)
    after = dict(zip(trainer.template.expression_names, trainer.expression.detach().tolist()))
    lifted = [after[name] >= 0.5 * weight - 1e-6 for name, weight in EXPRESSION_PROTOTYPES["surprise"].items()]
    assert all(lifted) if floored else not all(lifted)
