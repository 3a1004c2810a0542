"""load_photo: every kind of file a user may hand the CLI, and what comes out."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from sie3d.images import ImageError, PhotoWarning, check_rgb_uint8, load_photo


def rgb(height=80, width=100, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_rgb_png_round_trips_exactly(tmp_path):
    image = rgb()
    Image.fromarray(image).save(tmp_path / "a.png")
    out = load_photo(tmp_path / "a.png")
    assert out.dtype == np.uint8 and np.array_equal(out, image) and out.flags.writeable


def test_grey_is_replicated_with_a_warning(tmp_path):
    grey = rgb()[..., 0]
    Image.fromarray(grey).save(tmp_path / "g.png")
    with pytest.warns(PhotoWarning, match="greyscale"):
        out = load_photo(tmp_path / "g.png")
    assert out.shape == (80, 100, 3) and all(np.array_equal(out[..., c], grey) for c in range(3))


def test_16_bit_grey_is_scaled_to_8_bit(tmp_path):
    grey16 = np.full((70, 70), 65535, np.uint16)
    grey16[:, :35] = 257 * 100
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    with pytest.warns(PhotoWarning, match="greyscale"):
        out = load_photo(tmp_path / "g16.png")
    assert out[0, 0].tolist() == [100] * 3 and out[0, -1].tolist() == [255] * 3


def test_transparency_is_composited_onto_white(tmp_path):
    rgba = np.zeros((70, 70, 4), np.uint8)
    rgba[..., :3] = [200, 100, 0]
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    rgba[0, 1, 3] = 51  # 20 % opaque
    Image.fromarray(rgba).save(tmp_path / "a.png")
    with pytest.warns(PhotoWarning, match="transparent"):
        out = load_photo(tmp_path / "a.png")
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [round(0.2 * 200 + 0.8 * 255), round(0.2 * 100 + 0.8 * 255), 204]
    assert out[5, 5].tolist() == [200, 100, 0]


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(rgb(80, 120))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90° turn
    image.save(tmp_path / "r.jpg", exif=exif)
    assert load_photo(tmp_path / "r.jpg").shape == (120, 80, 3)


def test_huge_images_are_downscaled_with_a_warning(tmp_path):
    Image.fromarray(rgb(100, 3000)).save(tmp_path / "wide.png")
    with pytest.warns(PhotoWarning, match="3000x100; downscaled to 2048x68"):
        out = load_photo(tmp_path / "wide.png")
    assert out.shape == (68, 2048, 3)


@pytest.mark.parametrize("case, message", [
    ("missing", "photo not found"),
    ("directory", "is a directory"),
    ("empty", "is an empty file"),
    ("text", "is not an image file"),
    ("truncated", "truncated or corrupt"),
    ("tiny", "only 40x30 pixels; a face needs at least 64 px"),
])
def test_unusable_files_give_one_clear_error(tmp_path, case, message):
    path = tmp_path / f"{case}.jpg"
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("not a picture\n")
    elif case == "truncated":
        buffer = io.BytesIO()
        Image.fromarray(rgb(200, 200)).save(buffer, "JPEG")
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    elif case == "tiny":
        Image.fromarray(rgb(30, 40)).save(path)
    with pytest.raises(ImageError, match=message) as info:
        load_photo(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_check_rgb_uint8_names_the_fix():
    with pytest.raises(ImageError, match=r"\[H, W, 3\]"):
        check_rgb_uint8(np.zeros((10, 10), np.uint8))
    with pytest.raises(ImageError, match=r"astype\(np.uint8\)"):
        check_rgb_uint8(np.zeros((10, 10, 3), np.float32))


@pytest.mark.parametrize("name", ["astronaut", "obama", "biden"])
def test_sample_portraits_hold_one_face(name):
    from sie3d.face.detect import detect_faces
    from sie3d.images import sample_portrait

    with warnings.catch_warnings():
        warnings.simplefilter("error", PhotoWarning)  # biden.jpg is 970 x 2204: downscaled quietly
        photo = sample_portrait(name)
    assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3
    faces = detect_faces(photo, "yunet")
    assert len(faces) == 1 and faces[0].box[2] - faces[0].box[0] > 80  # one person, a face large enough


def test_unknown_sample_portrait_names_the_choices():
    from sie3d.images import sample_portrait

    with pytest.raises(KeyError, match="choose one of astronaut, obama, biden"):
        sample_portrait("mona_lisa")

