"""A finished run's avatar, re-posable: its config, template, mesh-bound Gaussians and coefficients.

``avatar.ply`` holds world-space splats frozen at one expression; re-posing needs the Gaussians in
their faces' frames, which the run's newest checkpoint holds (``gaussians`` state, ``expression``
coefficients ``[K]``), together with the template they are bound to: the one ``config.yaml`` names,
shaped like the person when ``models.person_shape`` is on. Checkpoints keep that template's rest
vertices (``template_vertices``); for runs older than that, the person fit is redone from the run's
``inputs/photo_0.png`` (:func:`sie3d.subject.prepare_subject`, a few seconds; it reproduces
``avatar.spz`` to its 1/4096 precision).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..avatar.gaussians import MeshGaussians
from ..avatar.rig import write_rig
from ..avatar.template import HeadTemplate
from ..avatar.template_files import load_template
from ..config import Config, load_config
from ..run_dir import AVATAR_RIG, CONFIG_FILE as RUN_CONFIG, input_photo_path
from .checkpoint import load_newest_checkpoint


@dataclass
class FinishedAvatar:
    """A run's avatar. ``expression``: ``[K]`` the coefficients it was optimised to; ``iteration``: of the checkpoint."""

    run_dir: Path
    config: Config
    template: HeadTemplate
    gaussians: MeshGaussians
    expression: torch.Tensor
    iteration: int


def load_finished_avatar(run_dir: str | Path, device: torch.device | str = "cpu") -> FinishedAvatar:
    """Rebuild the avatar of ``run_dir`` from ``config.yaml`` and its newest checkpoint.

    Raises:
        FileNotFoundError: not a run directory, or a run without a checkpoint.
    """
    run_dir = Path(run_dir)
    if not (run_dir / RUN_CONFIG).is_file():
        raise FileNotFoundError(f"{run_dir} has no {RUN_CONFIG}; give a run directory written by sie3d generate")
    newest = load_newest_checkpoint(run_dir)  # a damaged newest file is set aside, the one before it used
    if newest is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint under checkpoints/; was the run started?")
    path, state = newest
    config = load_config(run_dir / RUN_CONFIG)
    template = _bound_template(run_dir, config, state).to(device)
    gaussians = MeshGaussians(template, config.gaussians).to(device)
    gaussians.load_state_dict(state["gaussians"])
    gaussians.eval()
    expression = state["expression"].to(device=device, dtype=torch.float32)
    if expression.shape != (template.num_expressions,):
        raise ValueError(f"{path}: {tuple(expression.shape)} expression coefficients, but the template "
                         f"{template.name!r} has {template.num_expressions}; was config.yaml edited?")
    return FinishedAvatar(run_dir, config, template, gaussians, expression, int(state["iteration"]))


def _bound_template(run_dir: Path, config: Config, state: dict) -> HeadTemplate:
    """The template the checkpoint's Gaussians are bound to (see the module docstring)."""
    template = load_template(config.models)
    if "template_vertices" in state:
        return replace(template, vertices=state["template_vertices"].float())
    if not config.models.person_shape:
        return template
    from ..subject import make_subject, prepare_subject  # noqa: PLC0415 (older runs only: face models)

    photo = input_photo_path(run_dir, 0)
    if not photo.is_file():
        raise FileNotFoundError(f"{run_dir}: the run shaped its template to the photo, but {photo} is missing")
    return prepare_subject(make_subject([photo], config.models), config, torch.device("cpu"), template).template


def ensure_rig(run_dir: str | Path) -> Path:
    """The run's ``avatar.rig`` (what the book's viewer poses live), written from its newest checkpoint when
    the run predates rigs (``sie3d generate`` writes it on export); returns its path.

    Raises:
        FileNotFoundError: no rig and no checkpoint to make one from (see :func:`load_finished_avatar`).
    """
    path = Path(run_dir) / AVATAR_RIG
    if not path.is_file():
        avatar = load_finished_avatar(run_dir)
        write_rig(avatar.gaussians, avatar.expression, path, avatar.config.cameras)
    return path
