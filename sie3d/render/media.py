"""Turntables (GIF / MP4 via imageio) and multi-view grid images of splats."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio_v2
import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image, ImageDraw

from ..config import CameraConfig
from .cameras import orbit_cameras, view_label
from .renderer import render
from .splats import Splats

#: the views of :func:`view_grid` by default: (azimuth in degrees, label)
DEFAULT_VIEWS = ((0.0, "front"), (45.0, "front-left"), (90.0, "left"), (180.0, "back"), (-90.0, "right"))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[..., 3] float images in [0, 1] -> uint8 numpy."""
    return (images.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def _orbit(camera_cfg: CameraConfig | None, radius, fovy, polar_deg):
    cfg = camera_cfg or CameraConfig()
    return (cfg.eval_radius if radius is None else radius, cfg.eval_fovy if fovy is None else fovy,
            cfg.eval_polar if polar_deg is None else polar_deg)


@torch.no_grad()
def render_views(splats: Splats, azimuths_deg, resolution: int = 256, camera_cfg: CameraConfig | None = None,
                 radius: float | None = None, fovy: float | None = None, polar_deg: float | None = None,
                 background=(1.0, 1.0, 1.0), backend: str = "auto", batch: int = 4) -> np.ndarray:
    """uint8 [T, H, W, 3] renders from orbit cameras at the given azimuths (evaluation camera settings
    of ``camera_cfg`` unless radius / fovy / polar are given)."""
    radius, fovy, polar_deg = _orbit(camera_cfg, radius, fovy, polar_deg)
    azimuths = torch.as_tensor(azimuths_deg, dtype=torch.float32, device="cpu").reshape(-1)
    frames = []
    for start in range(0, azimuths.numel(), batch):
        cams = orbit_cameras(radius, polar_deg, azimuths[start:start + batch], fovy, resolution, resolution)
        frames.append(to_uint8(render(splats, cams, background, backend=backend).rgb))
    return np.concatenate(frames) if frames else np.zeros((0, resolution, resolution, 3), np.uint8)


def render_turntable(splats: Splats, n_frames: int = 36, resolution: int = 256,
                     camera_cfg: CameraConfig | None = None, **kwargs) -> np.ndarray:
    """uint8 [T, H, W, 3]: a full turn starting at the frontal view (azimuth 0, then towards +90)."""
    if n_frames < 1:
        raise ValueError(f"a turntable needs at least one frame, got {n_frames}")
    azimuths = torch.arange(n_frames, dtype=torch.float32, device="cpu") * (360.0 / n_frames)
    return render_views(splats, azimuths, resolution, camera_cfg, **kwargs)


def mp4_writer_missing() -> str | None:
    """Why ``.mp4`` cannot be written here (imageio's FFMPEG writer needs ``imageio-ffmpeg``), or None."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        return f"no ffmpeg for .mp4 ({type(exc).__name__}: {exc}); pip install imageio-ffmpeg"
    return None


def save_turntable(frames: np.ndarray, path: str | Path, fps: int = 12) -> Path:
    """Write frames [T, H, W, 3] uint8 as ``.gif`` (looping) or ``.mp4`` (H.264, sides padded to even)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    suffix = path.suffix.lower()
    if suffix == ".gif":
        iio.imwrite(path, frames, extension=".gif", duration=1000.0 / fps, loop=0)
    elif suffix == ".mp4":
        pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2  # yuv420p needs even sides
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        with imageio_v2.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                   pixelformat="yuv420p", macro_block_size=1, quality=8) as writer:
            for frame in frames:
                writer.append_data(frame)
    else:
        raise ValueError(f"turntable path must end in .gif or .mp4, got {path}")
    return path


def label_image(image: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in the top-left corner of a uint8 [H, W, 3] image (black on a light box)."""
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    left, top, right, bottom = draw.textbbox((4, 2), text)
    draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=(255, 255, 255))
    draw.text((4, 2), text, fill=(0, 0, 0))
    return np.asarray(pil)


def view_grid(splats: Splats, views=DEFAULT_VIEWS, resolution: int = 256, camera_cfg: CameraConfig | None = None,
              labels: bool = True, **kwargs) -> np.ndarray:
    """uint8 [H, W * len(views), 3]: the views side by side, labelled with their names and view labels.

    ``views`` is a sequence of ``(azimuth_deg, name)``.
    """
    azimuths = [a for a, _ in views]
    frames = render_views(splats, azimuths, resolution, camera_cfg, **kwargs)
    if labels:
        frames = [label_image(f, f"{name} ({view_label(a)})") for f, (a, name) in zip(frames, views)]
    return np.concatenate(list(frames), axis=1)


def save_image(image: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, image)
    return path
