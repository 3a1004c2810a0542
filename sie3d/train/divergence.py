"""NaN/Inf during optimisation: the finiteness check, and the state to go back to.

:class:`~sie3d.train.trainer.AvatarTrainer` checks the losses, then the gradients, then the parameters
after the step with :func:`all_finite`, takes a :func:`snapshot` before each step and :func:`restore`\\ s it
when the step made a parameter non-finite; a second event raises :class:`TrainingDiverged`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch


class TrainingDiverged(RuntimeError):
    """NaN/Inf came back after the learning rate had already been lowered once."""


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite, read back from the device once."""
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True


def snapshot(gaussians, expression: torch.Tensor, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Copies of the Gaussians' state, the expression coefficients ``[K]`` and the optimiser's state."""
    return {"gaussians": copy.deepcopy(gaussians.state_dict()), "expression": expression.detach().clone(),
            "optimizer": copy.deepcopy(optimizer.state_dict())}


def restore(state: dict[str, Any], gaussians, expression: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
    """Put back what :func:`snapshot` copied (the expression in place)."""
    gaussians.load_state_dict(state["gaussians"])
    with torch.no_grad():
        expression.copy_(state["expression"])
    optimizer.load_state_dict(state["optimizer"])
