"""The words the stages share: the seven emotion classes, defined once.

Face analysis (the classifiers' output order, the word list), diffusion (the expression dictionary)
and the configuration all read :data:`EMOTIONS` from here; face and diffusion may not import each
other, so the one definition sits at the base.
"""

from __future__ import annotations

import typing

#: an emotion class name (DeepFace's 7 classes, in the order of every classifier's output)
Emotion = typing.Literal["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
#: the 7 classes in classifier output order: ``probs[:, EMOTIONS.index("neutral")]`` is p(neutral)
EMOTIONS: tuple[str, ...] = typing.get_args(Emotion)
