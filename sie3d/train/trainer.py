"""The optimisation loop: Σ λ_k · L_k over mesh-bound Gaussians (+ expression coefficients).

Each iteration samples a batch of cameras, renders, computes every enabled ``loss_*`` (guidance
ISM/SDS, emotion on the frontal render, L_pos, L_lap, TV of image and depth, mean scale, and the
optional reference-view loss), steps Adam with per-attribute exponentially decayed learning rates,
runs the densify/prune strategy, logs to ``metrics.jsonl`` and checkpoints atomically.

Two expression routes (``loss.emotion_moves``):

* ``all`` (the paper): the emotion loss back-propagates into every Gaussian parameter.
* ``expression`` (the offline preset): the emotion loss moves only the template's blendshape
  coefficients; colours are fitted by the reference-view loss at the photo's own expression
  (its fitted coefficients) and no other loss moves the coefficients but ``loss_expression_prior``, which
  pulls those the target emotion does not use to zero (all of them for neutral); those it uses are
  projected to at least η × its FACS prototype after every step. An emotion loss that may move colours
  fools the classifier without changing what a person sees. Here the intensity η acts on the loss:
  its target is η·onehot(class) + (1 − η)·onehot(neutral) (:func:`~sie3d.face.expression_text.intensity_target`).

Robustness: a NaN/Inf loss or gradient skips the step; a NaN/Inf parameter after a step restores the
parameters and optimiser state from before the step; either way the learning rates are halved once
and the event is logged; a second event stops with :class:`TrainingDiverged`. Ctrl-C saves a
checkpoint first. ``resume`` continues bit-identically on CPU (RNG states are checkpointed).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..avatar.gaussians import MeshGaussians
from ..avatar.reference_view import reference_view_loss
from ..avatar.strategy import DensifyStrategy
from ..config import Config
from ..diffusion.conditioning import build_conditioning
from ..diffusion.guidance import make_guidance
from ..diffusion.prior import DiffusionPrior
from ..face.emotion import emotion_index, emotion_loss, load_emotion_classifier
from ..face.expression_text import emotion_class, intensity_target
from ..render.cameras import CameraSampler
from ..render.renderer import render
from ..render.splats import Splats
from ..runtime import seed_everything
from ..subject import PreparedSubject
from ..vocabulary import EMOTIONS
from .checkpoint import (
    capture_rng,
    checkpoint_path,
    latest_checkpoint,
    load_newest_checkpoint,
    prune_checkpoints,
    restore_rng,
    save_checkpoint,
)
from .divergence import TrainingDiverged, all_finite, restore, snapshot
from .frontal_windows import emotion_window, reference_window
from .losses import (expression_prior_target, loss_expression_prior, loss_lap, loss_pos, mean_scale_loss,
                     tv_loss, uniform_neighbours)
from .metrics_log import append_record, keep_before, summary_line
from .schedules import piecewise_linear


class AvatarTrainer:
    """Optimises one avatar. Build it, then call :meth:`fit`.

    Args:
        config: the resolved config tree.
        prepared: the photo prepared once (see :func:`sie3d.subject.prepare_subject`): template,
            identity, the photo's expression, reference view and classifier box.
        gaussians: the avatar to optimise, already initialised (:func:`sie3d.subject.initial_avatar`), on
            ``device``; its expression coefficients start at the photo's.
        run_dir: where checkpoints and ``metrics.jsonl`` go.
        device: torch device.
        prior: the diffusion prior that guides the avatar; ``None`` builds it from ``config.models``
            (only when the guidance loss is on). Pass one to share it across runs or benchmark it.
        progress: show a tqdm bar (quiet summaries every ``train.log_every`` otherwise).
    """

    def __init__(self, config: Config, prepared: PreparedSubject, gaussians: MeshGaussians, run_dir: str | Path,
                 device: torch.device, prior: DiffusionPrior | None = None, progress: bool = False, log: Callable[[str], None] = print):
        self.config = config
        self.prepared = prepared
        self.run_dir = Path(run_dir)
        self.device = device
        self.progress = progress
        self.log = log
        loss_cfg = config.loss
        if loss_cfg.emotion_moves not in ("all", "expression"):
            raise ValueError(f"loss.emotion_moves must be 'all' or 'expression', got {loss_cfg.emotion_moves!r}")

        self.template = prepared.template
        self.neighbours = uniform_neighbours(self.template.faces, self.template.vertices.shape[0],
                                             loss_cfg.lap_max_neighbours)
        self.gaussians = gaussians
        # the target starts at the photo's own expression (zeros without a photo fit)
        self.expression = torch.nn.Parameter(prepared.photo_expression.detach().to(device, torch.float32).clone())
        self.strategy = DensifyStrategy(config.gaussians)
        self.sampler = CameraSampler(config.cameras, config.render.resolution)
        self.frontal = prepared.frontal

        self.guidance = self.conditioning = None
        if loss_cfg.lambda_ism > 0:
            prior = prior if prior is not None else DiffusionPrior.from_config(config, device)
            identity = torch.as_tensor(prepared.subject.identity, dtype=torch.float32, device=device)
            self.conditioning = build_conditioning(prior, identity, config.conditioning)
            self.guidance = make_guidance(prior, config.guidance, config.conditioning)

        self.classifier = self.prior_floor = self.prior_used = None
        self.target_emotion = emotion_index(emotion_class(config.conditioning))
        # η (eq 6) on the expression route, where the offline prior cannot carry it: the loss's target
        # distribution is η·onehot(class) + (1 − η)·onehot(neutral); the paper's route keeps eq 8's one-hot
        eta = config.conditioning.eta_expr if loss_cfg.emotion_moves == "expression" else 1.0
        if loss_cfg.lambda_emotion > 0:
            self.classifier = load_emotion_classifier(config.models.emotion_loss_classifier, device)
            self.emotion_target = intensity_target(self.target_emotion, eta).to(device)  # [7]
        if loss_cfg.lambda_expression_prior > 0:
            # the target's own expression at least at η × its FACS prototype (a projection after each
            # step: fer alone may undo a jaw drop), every other blendshape pulled to zero by the loss; on
            # with or without the emotion loss (it stands in for the text-conditioned prior)
            self.prior_floor, self.prior_used = (t.to(device) for t in expression_prior_target(
                self.template.expression_names, EMOTIONS[self.target_emotion], eta))
        # each frontal loss renders only the window of the frontal camera it reads (sie3d.train.frontal_windows);
        # the reference's mesh frames, at the photo's fixed expression, are computed once
        self.photo_expression, self.reference, tile = prepared.photo_expression, None, config.render.tile_size
        if prepared.reference is not None:
            self.reference_camera, self.reference = reference_window(self.frontal, prepared.reference, tile)
            with torch.no_grad():
                self.photo_frames = gaussians.mesh_frames(self.expression_vertices(self.photo_expression.to(device)))
        self.emotion_camera, self.face_box = emotion_window(self.frontal, prepared.face_box.to(device), tile)

        self.optimizer = torch.optim.Adam(self._param_groups(), eps=config.optim.adam_eps)
        self.iteration = 0
        self.generator = seed_everything(config.run.seed, config.run.deterministic)
        self.lr_scale = 1.0
        self.recoveries = 0

    # ------------------------------------------------------------------ parameters

    def _param_groups(self) -> list[dict[str, Any]]:
        groups = self.gaussians.param_groups(self.config.optim)
        groups.append({"params": [self.expression], "lr": self.config.optim.lr_expression, "name": "expression"})
        return groups

    def learning_rates(self, iteration: int) -> dict[str, float]:
        """Per-group learning rate at ``iteration`` (exponential decay over the run, × recovery scale)."""
        progress = iteration / max(self.config.train.iterations, 1)
        rates = self.gaussians.learning_rates(self.config.optim, progress)
        rates["expression"] = self.config.optim.lr_expression
        return {k: v * self.lr_scale for k, v in rates.items()}

    def loss_weight(self, name: str, iteration: int) -> float:
        schedule = self.config.loss.schedules.get(name)
        if schedule:
            return piecewise_linear(schedule, iteration)
        return float(getattr(self.config.loss, f"lambda_{name}"))

    # ------------------------------------------------------------------ one iteration

    def expression_vertices(self, coefficients: torch.Tensor) -> torch.Tensor:
        return self.template.deform(coefficients)

    def _render(self, splats, cameras, background):
        return render(splats, cameras, background, backend=self.config.render.backend,
                      tile_size=self.config.render.tile_size)

    def compute_losses(self, iteration: int) -> tuple[dict[str, torch.Tensor], dict[str, float], Any]:
        """All enabled loss terms (unweighted) for one iteration, plus diagnostics and the render output."""
        cfg = self.config
        only_emotion_moves_expression = cfg.loss.emotion_moves == "expression"
        losses: dict[str, torch.Tensor] = {}
        diagnostics: dict[str, float | torch.Tensor] = {}  # tensors are read back once, in step()
        timings: dict[str, float] = {}

        # the mesh frames at the current expression, computed once: the emotion loss reaches the
        # coefficients through them; in `expression` mode every other loss sees them detached
        vertices = self.expression_vertices(self.expression)
        frames = self.gaussians.mesh_frames(vertices)
        train_frames = tuple(t.detach() for t in frames) if only_emotion_moves_expression else frames
        vertices = vertices.detach() if only_emotion_moves_expression else vertices
        splats = self.gaussians.to_world(frames=train_frames)

        tick = time.perf_counter()
        batch = self.sampler.sample(cfg.train.batch_size, iteration, self.generator)
        cameras = batch.cameras.to(self.device)
        out = self._render(splats, cameras, batch.backgrounds.to(self.device))
        images = out.rgb.permute(0, 3, 1, 2)  # [B, 3, H, W]
        depth = out.depth.permute(0, 3, 1, 2)
        flip = batch.flip.to(self.device)
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        timings["render"] = time.perf_counter() - tick

        if self.guidance is not None:
            tick = time.perf_counter()
            result = self.guidance(images, self.conditioning, cameras.azimuth_deg, iteration,
                                   generator=self.generator)
            losses["ism"] = result.get("loss_ism", result.get("loss_sds"))
            for key in ("grad_norm", "t", "s", "n_unet_evals", "time_encode", "time_unet"):
                if key in result:
                    value = result[key]
                    diagnostics[key] = value.detach() if torch.is_tensor(value) else float(value)
            timings["guidance"] = time.perf_counter() - tick

        if cfg.loss.lambda_tv_image > 0:
            losses["tv_image"] = tv_loss(images)
        if cfg.loss.lambda_tv_depth > 0:
            losses["tv_depth"] = tv_loss(depth)
        if cfg.loss.lambda_scale > 0:
            losses["scale"] = mean_scale_loss(splats.scales)
        if cfg.loss.lambda_pos > 0:
            losses["pos"] = loss_pos(splats.means, self.gaussians.anchor_positions(frames=train_frames),
                                     self.gaussians.face_region)
        if cfg.loss.lambda_lap > 0:  # the expression deformation of the template, relative to its rest shape
            losses["lap"] = loss_lap(vertices, self.template.vertices, self.neighbours)

        if self.reference is not None:
            tick = time.perf_counter()
            at_photo = self.gaussians.to_world(frames=self.photo_frames)
            front = self._render(at_photo, self.reference_camera, self.reference.background)
            losses["ref"] = reference_view_loss(front.rgb[0], self.reference)
            timings["reference"] = time.perf_counter() - tick

        if self.prior_used is not None:
            losses["expression_prior"] = loss_expression_prior(self.expression, self.prior_used)
        if self.classifier is not None and iteration % cfg.train.emotion_every == 0:
            tick = time.perf_counter()
            emotion_splats = self.gaussians.to_world(frames=frames)
            if only_emotion_moves_expression:
                s = emotion_splats
                emotion_splats = Splats(s.means, s.quats, s.scales, s.opacities, s.colors.detach())
            white = torch.ones(3, device=self.device)
            front = self._render(emotion_splats, self.emotion_camera, white)
            probs = self.classifier(front.rgb.permute(0, 3, 1, 2), self.face_box)
            losses["emotion"] = emotion_loss(probs, self.emotion_target.expand_as(probs))
            diagnostics["p_target"] = probs[0, self.target_emotion].detach()
            timings["emotion"] = time.perf_counter() - tick
        diagnostics.update({f"time_{k}": v for k, v in timings.items()})
        return losses, diagnostics, (out, vertices.detach())

    def _backward(self, losses: dict[str, torch.Tensor], iteration: int) -> torch.Tensor:
        """Weighted sum and backward; in ``expression`` mode the emotion term reaches the coefficients only."""
        weighted = {k: self.loss_weight(k, iteration) * v for k, v in losses.items()}
        emotion = weighted.pop("emotion", None)
        total = sum(weighted.values(), torch.zeros((), device=self.device))
        if emotion is not None and self.config.loss.emotion_moves == "expression":
            if total.requires_grad:
                total.backward()
            (grad,) = torch.autograd.grad(emotion, [self.expression])
            self.expression.grad = grad if self.expression.grad is None else self.expression.grad + grad
            return total.detach() + emotion.detach()
        if emotion is not None:
            total = total + emotion
        total.backward()
        return total.detach()

    def _recover(self, what: str, iteration: int) -> dict[str, float]:
        if self.recoveries >= 1:
            raise TrainingDiverged(
                f"{what} at iteration {iteration} again after lowering the learning rate once; stopping. "
                f"The last checkpoint is {latest_checkpoint(self.run_dir)}; try smaller optim.lr_* or "
                f"guidance.weight, or check the inputs")
        self.recoveries += 1
        self.lr_scale *= 0.5
        self.log(f"[train] {what} at iteration {iteration}: step undone, learning rates halved (×{self.lr_scale})")
        return {"nan_recovery": 1.0, "lr_scale": self.lr_scale}

    def step(self, iteration: int) -> dict[str, float]:
        """One optimisation iteration; returns the logged values."""
        start = time.perf_counter()
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rates(iteration)[group["name"]]
        self.optimizer.zero_grad(set_to_none=True)
        losses, diagnostics, (out, vertices) = self.compute_losses(iteration)
        # the device is asked for values four times a step (losses, gradients, parameters, the record),
        # each one read-back of a stacked tensor: every read-back stalls the queue of a GPU
        values = torch.stack([v.detach().float().reshape(()) for v in losses.values()]).tolist()
        record = {f"loss_{k}": v for k, v in zip(losses, values)}
        if not all(math.isfinite(v) for v in record.values()):
            bad = [k for k, v in record.items() if not math.isfinite(v)]
            return {**record, **self._recover(f"non-finite {', '.join(bad)}", iteration)}

        self.strategy.step_pre_backward(self.gaussians, out, iteration)
        tick = time.perf_counter()
        total = self._backward(losses, iteration)
        record["time_backward"] = time.perf_counter() - tick
        grads = [p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not all_finite(grads):
            self.optimizer.zero_grad(set_to_none=True)
            return {**record, **self._recover("non-finite gradient", iteration)}

        before = snapshot(self.gaussians, self.expression, self.optimizer)
        tick = time.perf_counter()
        self.optimizer.step()
        with torch.no_grad():
            self.expression.clamp_(0.0, 1.0)  # blendshapes are designed for [0, 1]
            if self.prior_floor is not None:
                torch.maximum(self.expression, self.prior_floor, out=self.expression)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if not all_finite(params):
            restore(before, self.gaussians, self.expression, self.optimizer)
            return {**record, **self._recover("non-finite parameter after the step", iteration)}
        info = self.strategy.step_post_backward(self.gaussians, self.optimizer, out, iteration, vertices)
        record["time_step"] = time.perf_counter() - tick
        record.update({f"strategy_{k}": float(v) for k, v in info.items()})

        pending = {k: v for k, v in diagnostics.items() if torch.is_tensor(v)}
        record.update({k: v for k, v in diagnostics.items() if k not in pending})
        read_back = torch.cat([total.detach().float().reshape(1), *(v.float().reshape(1) for v in pending.values()),
                               self.expression.detach().float()]).tolist()
        record["loss_total"] = read_back[0]
        record.update(zip(pending, read_back[1:1 + len(pending)]))
        record["n_gaussians"] = float(len(self.gaussians))
        record["lr_xyz"] = self.optimizer.param_groups[0]["lr"]
        record.update({f"expr_{n}": c for n, c in zip(self.template.expression_names, read_back[1 + len(pending):])})
        record["time_iteration"] = time.perf_counter() - start
        return record

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "gaussians": self.gaussians.state_dict(),
            "expression": self.expression.detach().cpu(),
            "template_vertices": self.template.vertices.detach().cpu(),  # person-fitted: see load_finished_avatar
            "optimizer": self.optimizer.state_dict(),
            "strategy": self.strategy.state_dict(),
            "lr_scale": self.lr_scale,
            "recoveries": self.recoveries,
            "rng": capture_rng(self.generator),
            "params_hash": self.config.params_hash(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["params_hash"] != self.config.params_hash():
            raise ValueError("the checkpoint was written with different params (hash "
                             f"{state['params_hash']} vs {self.config.params_hash()}); resume with the "
                             "run's own config.yaml, or start a new run directory")
        self.gaussians.load_state_dict(state["gaussians"])
        with torch.no_grad():
            self.expression.copy_(state["expression"])
        self.optimizer = torch.optim.Adam(self._param_groups(), eps=self.config.optim.adam_eps)
        self.optimizer.load_state_dict(state["optimizer"])
        self.strategy.load_state_dict(state["strategy"])
        self.lr_scale = state["lr_scale"]
        self.recoveries = state["recoveries"]
        self.iteration = state["iteration"]
        restore_rng(state["rng"], self.generator)

    def save_checkpoint(self) -> Path:
        path = save_checkpoint(checkpoint_path(self.run_dir, self.iteration), self.state_dict())
        prune_checkpoints(self.run_dir, keep=2)
        return path

    def resume(self) -> bool:
        """Load the newest checkpoint of ``run_dir`` that loads (if any; a damaged newer one is set aside
        with a warning, see :func:`load_newest_checkpoint`); drop metrics logged after it."""
        found = load_newest_checkpoint(self.run_dir, warn=self.log)
        if found is None:  # a run that stopped before its first checkpoint starts over
            keep_before(self.run_dir, None)
            return False
        path, state = found
        self.load_state_dict(state)
        keep_before(self.run_dir, self.iteration)
        self.log(f"[train] resumed from {path.name} (iteration {self.iteration})")
        return True

    # ------------------------------------------------------------------ loop

    def fit(self, iterations: int | None = None) -> list[dict[str, float]]:
        """Run until ``train.iterations`` (or ``iterations`` more); returns the logged records."""
        from tqdm.auto import tqdm

        cfg = self.config.train
        end = cfg.iterations if iterations is None else min(cfg.iterations, self.iteration + iterations)
        records = []
        self.run_dir.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=cfg.iterations, initial=self.iteration, disable=not self.progress, desc="avatar")
        try:
            while self.iteration < end:
                record = {"iteration": self.iteration, **self.step(self.iteration)}
                self.iteration += 1
                records.append(record)
                if record["iteration"] % cfg.log_every == 0 or self.iteration == cfg.iterations:
                    append_record(self.run_dir, record)
                    if not self.progress:
                        self.log(summary_line(record, cfg.iterations))
                bar.update(1)
                if self.iteration % cfg.checkpoint_every == 0 or self.iteration == end:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            path = self.save_checkpoint()
            self.log(f"[train] interrupted at iteration {self.iteration}; checkpoint {path}; "
                     "continue with --resume")
            raise
        finally:
            bar.close()
        return records
