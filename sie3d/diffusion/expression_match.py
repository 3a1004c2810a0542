"""Nearest emotion class of a free-text expression by CLIP text-embedding similarity (real encoder only).

The word list of :mod:`sie3d.face.expression_text` knows a few hundred word forms. Where the real
SD-1.5 CLIP text encoder is in the cache, text it does not know is compared with the class prompts:

* every prompt is ``expression_template.format(x)`` (``"{} expression"``: the text and the classes
  enter the encoder the way they enter eq 4);
* its feature is the encoder's ``last_hidden_state`` at the end-of-text token (CLIP's pooled text
  feature, before any projection), L2-normalised: ``[D]``;
* cosine similarities to the 7 classes ``[7]`` become probabilities with CLIP's logit scale,
  ``softmax(100 · cos)``; the nearest class is accepted when its probability is at least
  ``min_probability``.

Offline (the tiny prior's random encoder) the similarities mean nothing, so only the word list is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .text_encoders import tokenize
from .tokenizer import EOS_ID

#: CLIP's logit scale (exp of the learned temperature, 100 in the released models)
CLIP_LOGIT_SCALE = 100.0


@dataclass(frozen=True)
class TextSimilarityMatch:
    """Nearest class of a text: ``emotion``, its ``probability`` and all ``similarities`` (cosine)."""

    emotion: str
    probability: float
    similarities: dict[str, float]


def pooled_text_features(tokenizer, encoder, prompts: list[str]) -> torch.Tensor:
    """``[N, D]`` unit CLIP text features: the last hidden state at each prompt's end-of-text token."""
    ids = tokenize(tokenizer, prompts)  # [N, 77], padded with EOS
    eos = (ids == EOS_ID).int().argmax(dim=1)  # first EOS = end of the text
    device = next(encoder.parameters()).device
    with torch.no_grad():
        hidden = encoder(input_ids=ids.to(device)).last_hidden_state.float()  # [N, 77, D]
    pooled = hidden[torch.arange(len(prompts), device=device), eos.to(device)]
    return torch.nn.functional.normalize(pooled, dim=-1).cpu()


def nearest_class(tokenizer, encoder, text: str, classes: list[str] | tuple[str, ...],
                  template: str = "{} expression") -> TextSimilarityMatch:
    """The class whose prompt is nearest to ``text``'s prompt (see the module docstring)."""
    features = pooled_text_features(tokenizer, encoder, [template.format(text)] + [template.format(c) for c in classes])
    cosine = features[1:] @ features[0]  # [C]
    probs = torch.softmax(CLIP_LOGIT_SCALE * cosine, dim=0)
    best = int(probs.argmax())
    return TextSimilarityMatch(classes[best], float(probs[best]),
                               {c: float(s) for c, s in zip(classes, cosine)})


def load_sd15_text_encoder(device: torch.device | str = "cpu"):
    """(tokenizer, CLIP text encoder) of SD-1.5 from the weights cache, without the UNet or VAE.

    Raises:
        ModelNotAvailable: the encoder or tokenizer is not cached.
    """
    from ..weights import model_path
    from .prior import load_clip_text_model
    from .tokenizer import load_clip_tokenizer

    tokenizer = load_clip_tokenizer(model_path("sd15-tokenizer") / "tokenizer")
    encoder = load_clip_text_model(model_path("sd15-text-encoder") / "text_encoder").to(device)
    return tokenizer, encoder
