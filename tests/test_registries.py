"""Each stage's name -> factory registry offers exactly the names its config field accepts, and an
unknown name fails when the config loads, listing the valid ones."""

from __future__ import annotations

import typing

import pytest

from sie3d.config import Config, ConfigError, load_config
from sie3d.diffusion.guidance import METHODS
from sie3d.face.detect import DETECTORS
from sie3d.face.emotion import EMOTION_CLASSIFIERS
from sie3d.face.identity import ENCODERS
from sie3d.face.landmarks import LANDMARK_SOURCES
from sie3d.registry import Registry
from sie3d.render.renderer import BACKENDS


def choices(section: str, name: str) -> set[str]:
    """The ``Literal`` names of the config field ``section.name``."""
    hints = typing.get_type_hints(type(getattr(Config(), section)))
    assert typing.get_origin(hints[name]) is typing.Literal, f"{section}.{name} is not typed with Literal"
    return set(typing.get_args(hints[name]))


@pytest.mark.parametrize("registry, fields, extra", [
    (DETECTORS, ["models.face_detector"], set()),
    (ENCODERS, ["models.identity"], set()),
    (ENCODERS, ["eval.identity_model"], {"auto"}),
    (EMOTION_CLASSIFIERS, ["models.emotion_loss_classifier", "models.emotion_eval_classifier"], set()),
    (BACKENDS, ["render.backend"], {"auto"}),
    (METHODS, ["guidance.method"], set()),
    (LANDMARK_SOURCES, ["models.landmarks"], set()),
])
def test_registry_names_equal_the_config_choices(registry, fields, extra):
    for field in fields:
        assert choices(*field.split(".")) == set(registry.names()) | extra, field


@pytest.mark.parametrize("override, valid", [
    ("models.face_detector=mtcnn", "dlib, haar, scrfd, yunet"),
    ("models.emotion_loss_classifier=vgg", "fer, faceapi, deepface"),
    ("render.backend=vulkan", "auto, compiled, torch, dense, gsplat"),
    ("guidance.method=vsd", "ism, sds"),
    ("eval.identity_model=cosface", "auto, arcface, arcface-metric, dlib, sface"),
])
def test_an_unknown_name_fails_at_load_listing_the_valid_ones(override, valid):
    key, value = override.split("=")
    with pytest.raises(ConfigError, match=f"{key}: unknown name '{value}'; choose one of {valid}$"):
        load_config(overrides=[override])


def test_a_registry_lists_its_names_on_a_miss_and_refuses_a_second_entry():
    registry: Registry = Registry("widget")
    registry.register("a")(int)
    assert registry.get("a") is int and "a" in registry and registry.names() == ("a",)
    with pytest.raises(ValueError, match="unknown widget 'b'; choose one of a"):
        registry.get("b")
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(float)


def test_listed_names_equal_the_config_choices():
    from sie3d.diffusion.conditioning import MODES
    from sie3d.evaluation.features import FEATURE_SPACES

    assert choices("conditioning", "mode") == set(MODES)
    assert choices("eval", "fid_features") == {"auto", *FEATURE_SPACES}


def test_vae_precisions_equal_the_config_choices():
    from sie3d.diffusion.prior import VAE_PRECISIONS

    assert choices("models", "vae_precision") == set(VAE_PRECISIONS)
