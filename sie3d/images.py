"""Reading photos: one function that turns a file into an RGB ``uint8`` array or says clearly why not.

Every problem a user can fix is an :class:`ImageError` whose message names the file, the problem and
the fix; conversions that change the data (grey → RGB, alpha composited, downscaled) are
reported as :class:`PhotoWarning` through :mod:`warnings`, so a CLI can print them as one line.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: smallest side (pixels) in which a face can still be detected and classified
MIN_SIDE = 64
#: photos with a longer side are downscaled to this (area resampling) before analysis
MAX_SIDE = 2048


class ImageError(ValueError):
    """A photo cannot be used (missing, unreadable, truncated, not an image, too small)."""


class PhotoWarning(UserWarning):
    """A photo was usable but had to be converted (grey, alpha, huge, several frames)."""


def _to_8bit(array: np.ndarray) -> np.ndarray:
    """Integer or float pixel data of any range -> uint8 (16-bit PNG/TIFF, float TIFF)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        top = 1.0 if float(np.nanmax(array)) <= 1.0 else 255.0
        return np.clip(np.nan_to_num(array) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    top = 65535.0 if int(array.max()) > 255 else 255.0
    return np.clip(array.astype(np.float64) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """[H, W, 4] uint8 with straight alpha -> [H, W, 3] uint8 over a white background."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def _decode(image: Image.Image, name: str) -> np.ndarray:
    """A loaded PIL image of any mode -> [H, W, 3] uint8 RGB, warning about lossy conversions."""
    if getattr(image, "n_frames", 1) > 1:
        warnings.warn(f"{name} has {image.n_frames} frames; using the first", PhotoWarning, stacklevel=3)
    mode = image.mode
    if mode == "P":  # palette: expand, keeping transparency if the palette has some
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(image.convert("RGBA"))
        if rgba[..., 3].min() < 255:
            warnings.warn(f"{name} has transparent pixels; composited onto a white background",
                          PhotoWarning, stacklevel=3)
        if mode in ("LA", "La"):
            warnings.warn(f"{name} is greyscale; converted to RGB (colour cues are missing)",
                          PhotoWarning, stacklevel=3)
        return _composite_on_white(rgba)
    if mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F"):
        warnings.warn(f"{name} is greyscale; converted to RGB (colour cues are missing)",
                      PhotoWarning, stacklevel=3)
        grey = _to_8bit(np.asarray(image))
        return np.repeat(grey[..., None], 3, axis=2)
    if mode != "RGB":  # CMYK, YCbCr, LAB, HSV, ...
        image = image.convert("RGB")
    return _to_8bit(np.asarray(image))[..., :3]


def _downscale(rgb: np.ndarray, max_side: int, name: str) -> np.ndarray:
    height, width = rgb.shape[:2]
    if max(height, width) <= max_side:
        return rgb
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    warnings.warn(f"{name} is {width}x{height}; downscaled to {size[0]}x{size[1]} for analysis",
                  PhotoWarning, stacklevel=3)
    return np.array(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))


def load_photo(path: str | Path, max_side: int = MAX_SIDE, min_side: int = MIN_SIDE) -> np.ndarray:
    """Read an image file as RGB.

    EXIF orientation is applied; grey images are replicated to three channels; transparent pixels
    are composited onto white; images whose longer side exceeds ``max_side`` are downscaled.

    Returns:
        ``[H, W, 3]`` ``uint8`` RGB array.

    Raises:
        ImageError: missing, empty, unreadable, truncated, not an image, or smaller than ``min_side``.
    """
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise ImageError(f"photo not found: {name}; check the path")
    if path.is_dir():
        raise ImageError(f"{name} is a directory; give the path of one image file")
    if path.stat().st_size == 0:
        raise ImageError(f"{name} is an empty file; give a JPEG or PNG photo")
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = _decode(image, name)
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image file PIL can read; give a JPEG or PNG photo") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{name} has too many pixels to open safely; downscale it first") from None
    except OSError as exc:  # truncated or corrupt data, unreadable file
        raise ImageError(f"{name} could not be decoded ({exc}); the file is truncated or corrupt, "
                         "re-export or re-download it") from None
    height, width = rgb.shape[:2]
    if min(height, width) < min_side:
        raise ImageError(f"{name} is only {width}x{height} pixels; a face needs at least "
                         f"{min_side} px on the short side, use a larger photo")
    return _downscale(np.array(rgb, dtype=np.uint8), max_side, name)  # a writable copy


def check_rgb_uint8(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Validate an in-memory image: ``[H, W, 3]`` ``uint8`` (as returned by :func:`load_photo`)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ImageError(f"{what} must be an RGB array [H, W, 3]; got {shape} "
                         "(use sie3d.images.load_photo to read files)")
    if image.dtype != np.uint8:
        raise ImageError(f"{what} must be uint8 in [0, 255]; got {image.dtype} "
                         "(for floats in [0, 1] use (x * 255).round().astype(np.uint8))")
    return np.ascontiguousarray(image)


#: public-domain portraits that ship offline: scikit-image's astronaut and the official White House
#: photographs of the weights registry's ``portrait-*`` entries (``sie3d weights download --offline-set``)
SAMPLE_PORTRAITS = ("astronaut", "obama", "biden")


def sample_portrait(name: str) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB of one of :data:`SAMPLE_PORTRAITS` (each smiles; each one person), as
    :func:`load_photo` reads it (downscaled to ``MAX_SIDE``, without the warning).

    Raises:
        KeyError: an unknown name; sie3d.weights.ModelNotAvailable: the portrait is not fetched yet.
    """
    if name not in SAMPLE_PORTRAITS:
        raise KeyError(f"unknown sample portrait '{name}'; choose one of {', '.join(SAMPLE_PORTRAITS)}")
    if name == "astronaut":
        import skimage.data

        return skimage.data.astronaut()
    from .weights import model_path

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PhotoWarning)
        return load_photo(model_path(f"portrait-{name}"))
