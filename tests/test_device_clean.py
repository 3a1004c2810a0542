"""Tensors in the CUDA paths are created on the device they meet.

No GPU here, so two techniques stand in for one:

* the ``meta`` device: shape-only tensors that, like CUDA ones, refuse to mix with CPU tensors
  ("Tensor on device cpu is not on the expected device meta"). Functions whose output does not depend
  on tensor values run on it unchanged, so a CPU tensor made without ``device=`` fails here as it
  would on CUDA;
* the end-to-end CUDA tests at the bottom, which skip without CUDA (``benchmarks/gpu_check.sh`` runs them).
"""

from __future__ import annotations

import pytest
import torch

from sie3d.avatar.builtin_head import builtin_head
from sie3d.config import CameraConfig
from sie3d.render.cameras import frontal_camera

META = torch.device("meta")


def test_frontal_face_box_stays_on_the_template_device():
    head = builtin_head()
    camera = frontal_camera(CameraConfig(), 64)
    on_cpu = head.frontal_face_box(camera)
    assert on_cpu.shape == (4,) and bool(((on_cpu >= 0) & (on_cpu <= 1)).all())
    on_meta = head.to(META).frontal_face_box(camera.to(META))  # failed before: a CPU size tensor
    assert on_meta.device == META and on_meta.shape == (4,)
