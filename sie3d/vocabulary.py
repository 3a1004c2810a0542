"""The words the stages share: the seven emotion classes, and the names of the choosable components.

Face analysis (the classifiers' output order, the word list), diffusion (the expression dictionary)
and the configuration all read :data:`EMOTIONS` from here; face and diffusion may not import each
other, so the one definition sits at the base. The component names type the config's fields (a name
outside them fails when the config loads); each equals its stage's registry, which
tests/test_registries.py keeps so.
"""

from __future__ import annotations

import typing

#: an emotion class name (DeepFace's 7 classes, in the order of every classifier's output)
Emotion = typing.Literal["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
#: the 7 classes in classifier output order: ``probs[:, EMOTIONS.index("neutral")]`` is p(neutral)
EMOTIONS: tuple[str, ...] = typing.get_args(Emotion)

DetectorName = typing.Literal["dlib", "haar", "scrfd", "yunet"]  # sie3d.face.detect.DETECTORS
EncoderName = typing.Literal["arcface", "arcface-metric", "dlib", "sface"]  # sie3d.face.identity.ENCODERS
ClassifierName = typing.Literal["fer", "faceapi", "deepface"]  # sie3d.face.emotion.EMOTION_CLASSIFIERS
LandmarkSource = typing.Literal["dlib", "mediapipe"]  # sie3d.face.landmarks.LANDMARK_SOURCES
BackendName = typing.Literal["auto", "compiled", "torch", "dense", "gsplat"]  # auto + sie3d.render.renderer.BACKENDS
GuidanceName = typing.Literal["ism", "sds"]  # sie3d.diffusion.guidance.METHODS
VaePrecision = typing.Literal["fp32", "bf16", "fp16"]  # sie3d.diffusion.prior.VAE_PRECISIONS
