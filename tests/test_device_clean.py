"""Tensors in the CUDA paths are created on the device they meet.

The bug this guards against: on CUDA, ``HeadTemplate.frontal_face_box`` divided the projected points by
``torch.tensor([w, h], dtype=uv.dtype)``, made on the CPU because it named no device. No GPU here, so
three techniques stand in for one:

1. **static** (catches the bug): every call of a torch tensor factory in ``sie3d/`` names its
   ``device=``; either the device of the tensors it meets, or ``device="cpu"`` where the CPU is meant
   (draws from a seeded CPU ``torch.Generator``, data moved later, values read back on the host);
2. **meta inputs**: ``meta`` tensors refuse to mix with CPU tensors exactly as CUDA ones do ("Tensor on
   device cpu is not on the expected device meta") and run any shape-only code, so value-independent
   pieces (camera maths, DDIM step, Perp-Neg, the reparameterised loss, blendshapes, loss terms) run on
   them unchanged. Pieces that read values cannot: ``orbit_cameras`` and ``HeadTemplate`` validate their
   arguments (``.any()``, ``int(faces.max())``), ``frontal_face_box``, ``loss_pos``, ``face_crop`` and the
   rasterizers index with data-dependent masks or ``nonzero``;
3. **the default device elsewhere** (catches the bug, runs those pieces too): real CPU inputs under
   ``with torch.device("meta")``. A factory that names no device then makes a meta tensor, which meets
   the CPU inputs and fails, the mirror image of a CPU tensor meeting CUDA ones; values are real, so
   data-dependent code runs. It covers ``prepare_subject`` and training iterations with densification.
   Blind spots: ``torch.from_numpy`` (always CPU) and modules built inside the call (their parameters
   would land on meta), so models are built outside.

The end-to-end CUDA tests at the bottom skip without CUDA.
"""

from __future__ import annotations

import ast
import math
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from sie3d.avatar.animate import morph_coefficients
from sie3d.avatar.builtin_head import builtin_head
from sie3d.avatar.gaussians import MeshGaussians
from sie3d.config import CameraConfig, GaussiansConfig
from sie3d.diffusion.guidance import ddim_step, perp_neg, reparameterised_loss
from sie3d.face.emotion import emotion_loss, neutrality_score
from sie3d.render.cameras import (Cameras, CameraSampler, frontal_camera, intrinsics, look_at, orbit_cameras,
                                  orbit_position, project_points)
from sie3d.render.renderer import render
from sie3d.render.splats import random_splats
from sie3d.train.losses import (expression_prior_target, loss_expression_prior, loss_lap, mean_scale_loss, tv_loss,
                                uniform_neighbours)

META = torch.device("meta")
PACKAGE = Path(__file__).resolve().parents[1] / "sie3d"
FACTORIES = {"tensor", "as_tensor", "zeros", "ones", "full", "empty", "arange", "linspace", "logspace", "eye",
             "rand", "randn", "randint", "randperm", "scalar_tensor"}
ON_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (runs on the GPU machine)")


# ----------------------------------------------------------------------------------- 1. static


def factories_without_device(source: str) -> list[tuple[int, str]]:
    """(line, call) of every ``torch.<factory>(...)`` in ``source`` that does not name ``device=``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FACTORIES
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                and not any(k.arg == "device" for k in node.keywords)):
            found.append((node.lineno, ast.get_source_segment(source, node)))
    return sorted(found)


def test_every_tensor_factory_in_the_package_names_its_device():
    violations = [f"{path.relative_to(PACKAGE.parent)}:{line}: {call[:100]}"
                  for path in sorted(PACKAGE.rglob("*.py"))
                  for line, call in factories_without_device(path.read_text())]
    assert not violations, (
        "torch tensor factories without device= (on CUDA they make CPU tensors that meet CUDA ones); name the "
        "device of the tensors the result meets (device=x.device), or device=\"cpu\" where the CPU is meant "
        "(draws from a seeded CPU torch.Generator, data moved later):\n" + "\n".join(violations))


def test_the_static_check_catches_the_original_bug():
    original = ("uv = project_points(points, camera)[0]\n"
                "size = torch.tensor([w, h], dtype=uv.dtype)\n")
    assert factories_without_device(original) == [(2, "torch.tensor([w, h], dtype=uv.dtype)")]
    assert factories_without_device(original.replace("uv.dtype)", "uv.dtype, device=uv.device)")) == []
    assert factories_without_device("noise = torch.randn(3, generator=g, device='cpu')\nx = np.zeros(3)\n") == []


# ----------------------------------------------------------------------------------- 2. meta inputs


def test_camera_maths_runs_on_meta():
    radius, polar, azimuth = (torch.full((2,), v, device=META) for v in (3.0, 90.0, 30.0))
    eye = orbit_position(radius, polar, azimuth)
    cameras = Cameras(look_at(eye), intrinsics(torch.full((2,), 0.5, device=META), 32, 24), 32, 24,
                      azimuth, polar, radius, torch.full((2,), 0.5, device=META))
    assert cameras.viewmats.device == META and cameras.Ks.shape == (2, 3, 3)
    assert cameras.centers.shape == (2, 3) and cameras.centers.device == META
    uv = project_points(torch.zeros(5, 3, device=META), frontal_camera(CameraConfig(), 32).to(META))
    assert uv.shape == (1, 5, 2) and uv.device == META


def test_guidance_maths_runs_on_meta():
    x, eps = torch.zeros(2, 4, 8, 8, device=META), torch.zeros(2, 4, 8, 8, device=META)
    assert ddim_step(x, eps, torch.tensor(0.5, device=META), torch.tensor(0.7, device=META)).device == META
    assert ddim_step(x, eps, 0.5, 0.7).shape == x.shape
    combined = perp_neg(torch.zeros(2, 3, 4, 8, 8, device=META), torch.ones(2, 3, device=META))
    assert combined.shape == (2, 4, 8, 8) and combined.device == META
    latents = torch.zeros(2, 4, 8, 8, device=META, requires_grad=True)
    loss = reparameterised_loss(latents, eps)
    loss.backward()
    assert loss.shape == () and latents.grad.device == META


def test_blendshapes_and_gaussians_run_on_meta():
    head = builtin_head()
    coefficients = torch.zeros(head.num_expressions, device=META)
    assert head.deform(coefficients).device == META
    path = morph_coefficients(coefficients, torch.ones(head.num_expressions, device=META), 4)
    assert path.shape == (4, head.num_expressions) and path.device == META
    splats = MeshGaussians(head, GaussiansConfig(subdivisions=0)).to(META).to_world()
    assert splats.means.device == META and splats.scales.shape == splats.means.shape


def test_loss_pieces_run_on_meta():
    head = builtin_head()
    images = torch.zeros(2, 3, 16, 16, device=META)
    assert tv_loss(images).device == META and mean_scale_loss(torch.ones(5, 3, device=META)).device == META
    neighbours = uniform_neighbours(head.faces, head.num_vertices).to(META)
    assert loss_lap(head.vertices.to(META), head.vertices.to(META), neighbours).device == META
    _, used = expression_prior_target(head.expression_names, "happy")
    assert loss_expression_prior(torch.zeros(head.num_expressions, device=META), used.to(META)).device == META
    probs = torch.full((2, 7), 1 / 7, device=META)
    assert emotion_loss(probs, "happy").device == META and emotion_loss(probs, probs.clone()).device == META
    assert neutrality_score(probs).device == META


# ----------------------------------------------------------------------------------- 3. default device elsewhere


@contextmanager
def default_device_elsewhere():
    """Factories that name no device make meta tensors; meeting the (CPU) inputs, they fail."""
    with torch.device(META):
        yield


def test_the_default_device_elsewhere_catches_the_original_bug():
    uv = torch.rand(5, 2)
    with default_device_elsewhere(), pytest.raises(RuntimeError, match="device"):
        uv / torch.tensor([64, 48], dtype=uv.dtype)
    with default_device_elsewhere():
        assert (uv / torch.tensor([64, 48], dtype=uv.dtype, device=uv.device)).device.type == "cpu"


def test_template_cameras_gaussians_and_render_with_the_default_device_elsewhere():
    head = builtin_head()
    camera = frontal_camera(CameraConfig(), 64)
    expected = head.frontal_face_box(camera)
    splats = random_splats(200, torch.Generator().manual_seed(0), extent=0.5)
    with default_device_elsewhere():
        box = head.frontal_face_box(camera)  # failed before: a size tensor on the default device
        cameras = orbit_cameras(3.0, 90.0, torch.tensor([0.0, 40.0], device="cpu"), 0.5, 32)
        batch = CameraSampler(CameraConfig(), 32).sample(3, 0, torch.Generator().manual_seed(0))
        coefficients = head.expression_coefficients(**{head.expression_names[0]: 0.5})
        vertices = head.deform(coefficients)
        gaussians = MeshGaussians(head, GaussiansConfig(subdivisions=0, gaussians_per_face=2),
                                  torch.Generator().manual_seed(0))
        gaussians.clamp_opacity(None, 0.05)
        world = gaussians.to_world(vertices)
        out = render(splats, cameras, batch.backgrounds[:2], backend="torch")
    assert torch.equal(box, expected)
    assert cameras.viewmats.device.type == "cpu" and batch.cameras.Ks.device.type == "cpu"
    assert world.means.device.type == "cpu" and out.rgb.shape == (2, 32, 32, 3)


@pytest.fixture(scope="module")
def astronaut_subject():
    from skimage.data import astronaut

    from sie3d.config import load_config
    from sie3d.subject import make_subject

    config = load_config(PACKAGE.parent / "params/quick.yaml")
    return make_subject([astronaut()], config.models, ["astronaut"])


@pytest.mark.parametrize("route", ["reference view", "paper: no reference view"])
def test_prepare_subject_with_the_default_device_elsewhere(astronaut_subject, route):
    from sie3d.config import load_config
    from sie3d.subject import prepare_subject

    overrides = ["render.frontal_resolution=128"] + (["loss.lambda_ref=0"] if route.startswith("paper") else [])
    config = load_config(PACKAGE.parent / "params/quick.yaml", overrides=overrides)
    with default_device_elsewhere():  # the paper route reaches HeadTemplate.frontal_face_box
        prepared = prepare_subject(astronaut_subject, config, torch.device("cpu"))
    assert prepared.face_box.device.type == "cpu" and prepared.face_box.shape == (4,)


def test_training_iterations_with_the_default_device_elsewhere(astronaut_subject, tmp_path):
    from sie3d.config import load_config
    from sie3d.subject import initial_avatar, prepare_subject
    from sie3d.train.trainer import AvatarTrainer

    config = load_config(PACKAGE.parent / "params/quick.yaml", overrides=[
        "render.resolution=24", "render.frontal_resolution=128", "gaussians.subdivisions=0",
        "gaussians.densify_from=1", "gaussians.densify_every=1", "gaussians.opacity_reset_every=1",
        "train.emotion_every=1"])
    cpu = torch.device("cpu")
    prepared = prepare_subject(astronaut_subject, config, cpu)
    trainer = AvatarTrainer(config, prepared, initial_avatar(prepared, config, cpu), tmp_path, cpu,
                            log=lambda *_: None)
    with default_device_elsewhere():  # sampler, render, guidance, reference, emotion, backward, densify
        rows = [trainer.step(i) for i in range(2)]
    assert all(math.isfinite(r["loss_total"]) for r in rows)
    assert rows[1]["strategy_cloned"] + rows[1]["strategy_split"] > 0


# ----------------------------------------------------------------------------------- CUDA end to end


def _finite_numbers(value) -> bool:
    if isinstance(value, dict):
        return all(_finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite_numbers(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def _generate_and_evaluate(tmp_path: Path, overrides: list[str]) -> None:
    """The astronaut through ``sie3d generate``'s and ``sie3d evaluate``'s library entries on CUDA."""
    from skimage.data import astronaut

    from sie3d.config import load_config
    from sie3d.evaluation.evaluate import evaluate_runs
    from sie3d.evaluation.evaluator import Evaluator
    from sie3d.generate import generate
    from sie3d.run_dir import AVATAR_PLY, EVALUATION_METRICS, FRONTAL_RENDER, SUMMARY_FILE, read_summary

    config = load_config(PACKAGE.parent / "params/quick.yaml", overrides=[
        "run.device=cuda", "train.iterations=3", "train.checkpoint_every=3", "render.resolution=64",
        "render.frontal_resolution=128", "eval.turntable_frames=4", "models.landmarks=mediapipe", *overrides])
    run_dir = tmp_path / "astronaut"
    generate([astronaut()], config, run_dir, sources=["astronaut"], log=lambda *_: None)
    for name in (SUMMARY_FILE, FRONTAL_RENDER, AVATAR_PLY):
        assert (run_dir / name).is_file(), name
    summary = read_summary(run_dir).to_dict()
    assert _finite_numbers(summary), summary

    evaluate_runs([run_dir], tmp_path / "evaluation", evaluator=Evaluator(features="dlib", identity="dlib",
                                                                          device="cuda"))
    assert (run_dir / EVALUATION_METRICS).is_file()
    assert (tmp_path / "evaluation" / "evaluation.json").is_file()


@pytest.mark.gpu
@ON_CUDA
def test_prepare_train_outputs_evaluate_on_cuda(tmp_path):
    _generate_and_evaluate(tmp_path, [])


@pytest.mark.gpu
@ON_CUDA
def test_prepare_train_outputs_evaluate_on_cuda_with_gsplat(tmp_path):
    pytest.importorskip("gsplat")
    _generate_and_evaluate(tmp_path, ["render.backend=gsplat"])
