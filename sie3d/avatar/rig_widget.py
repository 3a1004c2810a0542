"""A JupyterLab panel that re-poses an avatar from its rig: emotion, intensity, azimuth -> a render.

:class:`RigPanel` poses :class:`~sie3d.avatar.rig.Rig` at ``intensity`` × the chosen emotion's prototype
(the rig header's table, :data:`sie3d.avatar.template.EXPRESSION_PROTOTYPES`; ``own`` = the avatar's trained
coefficients) and renders it with :func:`sie3d.render.media.render_views` from the rig's frontal camera
turned by ``azimuth`` degrees. :meth:`RigPanel.render` is the image alone (a static figure for the book);
:meth:`RigPanel.widget` wires ipywidgets (imported there, so the module loads without them) to it.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image

from ..render.media import render_views
from .rig import Rig

#: the dropdown entry that poses the avatar at its own (trained) coefficients
OWN = "own"


class RigPanel:
    """Emotion / intensity / azimuth controls over ``rig``; renders are ``resolution`` px squares."""

    def __init__(self, rig: Rig, resolution: int = 256, backend: str = "auto"):
        self.rig = rig
        self.resolution = resolution
        self.backend = backend
        self.choices = [OWN, *rig.header["emotions"]]
        self.image = None  # the ipywidgets.Image once widget() built it

    def coefficients(self, emotion: str, intensity: float) -> torch.Tensor:
        """[K] blendshape coefficients: ``intensity`` × the emotion's prototype (or × the avatar's own)."""
        if emotion == OWN:
            return intensity * self.rig.coefficients
        return self.rig.emotion_coefficients(emotion, intensity)

    def render(self, emotion: str = OWN, intensity: float = 1.0, azimuth: float = 0.0) -> np.ndarray:
        """uint8 [H, W, 3]: the posed avatar seen from ``azimuth`` degrees (0 = frontal)."""
        camera = self.rig.header["camera"]
        splats = self.rig.pose(self.coefficients(emotion, intensity))
        return render_views(splats, [float(azimuth)], self.resolution, radius=camera["radius"],
                            fovy=math.radians(camera["fovy_deg"]), polar_deg=90.0, backend=self.backend)[0]

    def widget(self, emotion: str = OWN, intensity: float = 1.0, azimuth: float = 0.0):
        """An ``ipywidgets.VBox`` (controls above the render) whose changes re-render the image."""
        import ipywidgets as widgets  # noqa: PLC0415 (notebook-only dependency)

        self.emotion = widgets.Dropdown(options=self.choices, value=emotion, description="emotion")
        self.intensity = widgets.FloatSlider(value=intensity, min=0.0, max=1.5, step=0.05, description="intensity",
                                             continuous_update=False)
        self.azimuth = widgets.FloatSlider(value=azimuth, min=-180.0, max=180.0, step=5.0, description="azimuth",
                                           continuous_update=False)
        self.image = widgets.Image(format="png", width=self.resolution, height=self.resolution)
        for control in (self.emotion, self.intensity, self.azimuth):
            control.observe(self.update, names="value")
        self.update()
        return widgets.VBox([widgets.HBox([self.emotion, self.intensity, self.azimuth]), self.image])

    def update(self, change=None) -> None:
        """Re-render the image from the controls' current values (the widgets' callback)."""
        buffer = io.BytesIO()
        Image.fromarray(self.render(self.emotion.value, self.intensity.value, self.azimuth.value)).save(buffer, "png")
        self.image.value = buffer.getvalue()
