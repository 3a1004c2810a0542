"""A generation request: free text -> emotion class, intensity η, accessory, and how the text was matched.

Every caller resolves a request here (``sie3d generate``, the batch manifest, ``sie3d ablations``, the
notebooks, library code)::

    request = resolve_request("smiling broadly", intensity=0.5, config=config)
    config = request.apply(config)  # conditioning.expression / expression_class / eta_expr / accessory

The text enters the semantic embedding (paper eq 4) as written; its emotion class (the emotion
loss's target, eq 7-8) comes from the word list of :mod:`sie3d.face.expression_text` or, for text the
list does not know and only with the real text encoder (``models.prior=arc2face`` and the SD-1.5 CLIP
encoder cached), the nearest class by CLIP text similarity (:mod:`sie3d.diffusion.expression_match`),
accepted at probability :data:`MIN_CLIP_PROBABILITY` or more. Anything else is refused with
:class:`~sie3d.face.expression_text.UnknownExpression`, a one-line ``ValueError`` listing the classes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .config import Config
from .face.expression_text import ExpressionMatch, NegatedExpression, UnknownExpression, match_words
from .runtime import ModelCache

#: a CLIP-similarity class is accepted at this probability (softmax over the 7 classes) or more
MIN_CLIP_PROBABILITY = 0.5


@dataclass(frozen=True)
class Request:
    """One resolved request.

    Attributes:
        text: the expression text as written (enters eq 4 unchanged).
        match: how ``text`` was mapped to its emotion class (class, score in [0, 1], method, evidence).
        intensity: η of eq 6 in [0, 1]; None keeps the config's ``conditioning.eta_expr``.
        accessory: accessory text; ``""`` is none, None keeps the config's ``conditioning.accessory``.
    """

    text: str
    match: ExpressionMatch
    intensity: float | None = None
    accessory: str | None = None

    @property
    def emotion(self) -> str:
        """The emotion-loss class, one of :data:`sie3d.vocabulary.EMOTIONS`."""
        return self.match.emotion

    @property
    def method(self) -> str:
        """``"word list"`` or ``"clip text similarity"``."""
        return self.match.method

    @property
    def score(self) -> float:
        return self.match.score

    def apply(self, config: Config) -> Config:
        """``config`` with this request in its ``conditioning`` section (expression, class, η, accessory)."""
        cond = config.conditioning
        cond = replace(cond, expression=self.text, expression_class=self.emotion,
                       eta_expr=self.intensity if self.intensity is not None else cond.eta_expr,
                       accessory=self.accessory if self.accessory is not None else cond.accessory)
        return replace(config, conditioning=cond)

    def as_dict(self) -> dict[str, Any]:
        """What run manifests record (``expression_match`` as ``summary.json`` holds it)."""
        return {"expression": self.text, "intensity": self.intensity, "accessory": self.accessory,
                "expression_match": self.match.as_dict()}

    def describe(self) -> str:
        """One line, e.g. ``'smiling broadly' -> happy (word list, score 1.00: smiling->happy), η 0.5``."""
        return (self.match.describe() + (f", η {self.intensity:g}" if self.intensity is not None else "")
                + (f", accessory {self.accessory!r}" if self.accessory else ""))


def _clip_match(text: str, config: Config, refusal: UnknownExpression, models: ModelCache) -> ExpressionMatch:
    """The CLIP nearest class of ``text`` (see the module docstring); re-raises ``refusal`` when unsure."""
    from .diffusion import expression_match
    from .vocabulary import EMOTIONS
    from .weights import ModelNotAvailable

    try:
        tokenizer, encoder = models.get(("sd15-text-encoder", "cpu"), expression_match.load_sd15_text_encoder)
    except ModelNotAvailable:
        raise refusal from None
    near = expression_match.nearest_class(tokenizer, encoder, text, EMOTIONS, config.conditioning.expression_template)
    if near.probability < MIN_CLIP_PROBABILITY:
        raise UnknownExpression(f"{refusal} (CLIP text similarity: nearest {near.emotion}, p={near.probability:.2f} "
                                f"< {MIN_CLIP_PROBABILITY})") from None
    evidence = tuple(f"{c}:{s:.3f}" for c, s in near.similarities.items())
    return ExpressionMatch(text, near.emotion, near.probability, "clip text similarity", evidence)


def resolve_request(text: str, intensity: float | None = None, accessory: str | None = None,
                    config: Config | None = None, models: ModelCache | None = None) -> Request:
    """Resolve free text (and η, accessory) to a :class:`Request`: word list first, then CLIP.

    Args:
        text: the expression, e.g. ``"smiling broadly"``, ``"surprised"``, ``"furious"``.
        intensity: η in [0, 1], or None (the config's).
        accessory: accessory text (``""``: none), or None (the config's).
        config: the run's config; CLIP is tried only when it is given and ``models.prior`` is ``arc2face``
            (the tiny prior's encoder is random: the word list only).
        models: keeps the CLIP text encoder between calls (a manifest resolves several texts).

    Raises:
        UnknownExpression: no confident class (a one-line ``ValueError`` listing the classes).
        ValueError: η is not a number in [0, 1].
    """
    if intensity is not None and (isinstance(intensity, bool) or not isinstance(intensity, (int, float))
                                  or not 0.0 <= intensity <= 1.0):
        raise ValueError(f"intensity η must be a number in [0, 1], got {intensity!r}")
    try:
        match = match_words(text)
    except UnknownExpression as exc:
        if config is None or config.models.prior != "arc2face" or isinstance(exc, NegatedExpression):
            raise  # a negated emotion is not guessed by CLIP, which does not read negation
        match = _clip_match(text, config, exc, models or ModelCache())
    return Request(text, match, None if intensity is None else float(intensity), accessory)
