"""Free-text expressions -> one of the emotion classes of the classifiers (the emotion loss's target).

``--expression "smiling broadly"`` enters the semantic embedding (paper eq 4) as written; the
perceptual expression loss (eq 7-8) needs one of the 7 classes of :data:`~sie3d.vocabulary.EMOTIONS`.
This module maps the text with a word list:

1. the text is lower-cased and split into words (letters and apostrophes);
2. each word is reduced to a base form by trying, in order, the word itself and the forms that undo
   the English suffixes -s, -es, -ed, -d, -ing, -ly, -ily, -ied, -ness, -ful and doubled consonants
   (``grinning`` -> ``grin``, ``smiling`` -> ``smile``, ``happily`` -> ``happy``); the first form in
   :data:`SYNONYMS` wins;
3. a word right after a negation (``not``, ``no``, ``never``, ``without``, ``*n't``; up to two words
   later) does not vote: ``"not happy"`` names no class (not happy may be sad, angry or neutral), and
   text whose only emotion words are negated is refused saying so;
4. each remaining word votes for its class; the class with the most votes wins when it has strictly
   more than any other. ``score`` = its votes / all votes (1.0 when every emotion word agrees).

Intensity η (paper eq 6) on the offline expression route: the emotion loss's target distribution is
:func:`intensity_target` = η·onehot(class) + (1 − η)·onehot(neutral) instead of the one-hot class, so
the cross-entropy is smallest where the classifier gives the class probability η (and neutral 1 − η).

Text with no vote, or a tie, raises :class:`UnknownExpression`, whose message is one line listing the
classes. Where the real CLIP text encoder is loaded, :mod:`sie3d.diffusion.expression_match` adds the
nearest class by text-embedding similarity for words this list does not know.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import torch

from ..vocabulary import EMOTIONS
from .emotion import emotion_index

#: base form -> emotion class (every class name maps to itself)
SYNONYMS: dict[str, str] = {
    **{e: e for e in EMOTIONS},
    # angry
    "anger": "angry", "mad": "angry", "furious": "angry", "fury": "angry", "rage": "angry", "enrage": "angry",
    "irate": "angry", "annoy": "angry", "irritate": "angry", "livid": "angry", "hostile": "angry",
    "scowl": "angry", "glare": "angry", "frustrate": "angry", "outrage": "angry", "wrath": "angry",
    "grumpy": "angry", "fume": "angry", "seethe": "angry", "snarl": "angry", "cross": "angry",
    "aggressive": "angry", "stern": "angry",
    # disgust
    "disgusted": "disgust", "revulsion": "disgust", "repulse": "disgust", "gross": "disgust",
    "revolt": "disgust", "nauseate": "disgust", "nausea": "disgust", "sicken": "disgust", "yuck": "disgust",
    "contempt": "disgust", "sneer": "disgust", "loathe": "disgust", "distaste": "disgust", "repel": "disgust",
    "appal": "disgust", "appall": "disgust",
    # fear
    "afraid": "fear", "scare": "fear", "frighten": "fear", "fright": "fear", "terrify": "fear",
    "terror": "fear", "horror": "fear", "horrify": "fear", "panic": "fear", "anxious": "fear",
    "anxiety": "fear", "nervous": "fear", "dread": "fear", "worry": "fear", "alarm": "fear",
    "petrify": "fear", "spook": "fear", "timid": "fear", "fearful": "fear", "fearfully": "fear",
    "scary": "fear",
    # happy
    "happiness": "happy", "smile": "happy", "grin": "happy", "joy": "happy", "cheer": "happy",
    "cheery": "happy", "laugh": "happy", "glad": "happy", "delight": "happy", "beam": "happy",
    "content": "happy", "please": "happy", "elate": "happy", "ecstatic": "happy", "amuse": "happy",
    "merry": "happy", "jolly": "happy", "bliss": "happy", "playful": "happy", "joyous": "happy",
    "giggle": "happy", "chuckle": "happy", "thrill": "happy", "overjoy": "happy",
    # sad
    "sadness": "sad", "unhappy": "sad", "sorrow": "sad", "cry": "sad", "weep": "sad", "tear": "sad",
    "depress": "sad", "gloom": "sad", "gloomy": "sad", "melancholy": "sad", "miserable": "sad",
    "misery": "sad", "grief": "sad", "grieve": "sad", "mourn": "sad", "heartbroken": "sad", "upset": "sad",
    "sob": "sad", "frown": "sad", "despair": "sad", "dejected": "sad", "glum": "sad", "pout": "sad",
    "downcast": "sad", "sorry": "sad", "forlorn": "sad", "somber": "sad", "sombre": "sad", "sulk": "sad",
    # surprise
    "surprised": "surprise", "astonish": "surprise", "amaze": "surprise", "shock": "surprise",
    "startle": "surprise", "stun": "surprise", "awe": "surprise", "astound": "surprise", "gasp": "surprise",
    "wow": "surprise", "flabbergast": "surprise", "dumbfound": "surprise", "incredulous": "surprise",
    "agape": "surprise", "baffle": "surprise",
    # neutral
    "calm": "neutral", "relax": "neutral", "expressionless": "neutral", "blank": "neutral",
    "serene": "neutral", "deadpan": "neutral", "impassive": "neutral", "stoic": "neutral",
    "composed": "neutral", "indifferent": "neutral", "emotionless": "neutral", "placid": "neutral",
    "unemotional": "neutral", "poker": "neutral", "rest": "neutral", "still": "neutral",
    "tranquil": "neutral", "peaceful": "neutral",
}
#: words after which (up to two words later) an emotion word does not vote
NEGATIONS = frozenset({"not", "no", "never", "without", "nor", "hardly", "barely"})
_NEGATION_REACH = 2
_WORD = re.compile(r"[a-z']+")


class UnknownExpression(ValueError):
    """Text that names no emotion class confidently; the message is one line listing the classes."""


class NegatedExpression(UnknownExpression):
    """Text whose only emotion words are negated (``"not happy"``): the opposite of a class is no single
    class. Not for a text-similarity fallback either: CLIP text embeddings do not read negation."""


@dataclass(frozen=True)
class ExpressionMatch:
    """How an expression text was mapped to an emotion class.

    Attributes:
        text: the text as the user wrote it (it enters eq 4 unchanged).
        emotion: one of :data:`EMOTIONS`.
        score: in [0, 1]: word list: the share of the emotion words voting for ``emotion``;
            CLIP: the softmax probability of ``emotion`` over the classes.
        method: ``"word list"`` or ``"clip text similarity"``.
        evidence: the words that voted (``word->class``), or the per-class similarities.
    """

    text: str
    emotion: str
    score: float
    method: str
    evidence: tuple[str, ...]

    def as_dict(self) -> dict:
        return {**asdict(self), "evidence": list(self.evidence)}

    def describe(self) -> str:
        """One line, e.g. ``'smiling broadly' -> happy (word list, score 1.00: smiling->happy)``."""
        return (f"{self.text!r} -> {self.emotion} ({self.method}, score {self.score:.2f}: "
                f"{', '.join(self.evidence)})")


def base_forms(word: str) -> list[str]:
    """Candidate base forms of one lower-case word, the word itself first."""
    forms = [word]
    for suffix, replacements in (("ies", ("y",)), ("ied", ("y",)), ("ily", ("y",)), ("iness", ("y",)),
                                 ("ness", ("",)), ("ing", ("", "e")), ("ed", ("", "e")), ("es", ("", "e")),
                                 ("ly", ("",)), ("ful", ("",)), ("s", ("",)), ("d", ("",))):
        if word.endswith(suffix) and len(word) - len(suffix) >= 2:
            stem = word[: -len(suffix)]
            forms += [stem + r for r in replacements]
            if len(stem) >= 3 and stem[-1] == stem[-2] and stem[-1] not in "aeiouls":
                forms.append(stem[:-1])  # grinning -> grin, stunned -> stun
    return list(dict.fromkeys(forms))


def word_class(word: str) -> str | None:
    """The emotion class of one word (any form), or None."""
    for form in base_forms(word.lower().strip("'")):
        if form in SYNONYMS:
            return SYNONYMS[form]
    return None


def classes_hint() -> str:
    return (f"choose one of {', '.join(EMOTIONS)}, or a word for one of them "
            "(e.g. smiling, furious, surprised, scared, crying, calm)")


def match_words(text: str) -> ExpressionMatch:
    """Map ``text`` to a class with the word list (see the module docstring).

    Raises:
        UnknownExpression: no emotion word, or a tie between classes.
    """
    words = _WORD.findall(text.lower())
    votes: dict[str, list[str]] = {}
    negated: list[str] = []  # emotion words a negation took out, e.g. "not happy"
    negated_until, negation = -1, ""
    for i, word in enumerate(words):
        if word in NEGATIONS or word.endswith("n't"):
            negated_until, negation = i + _NEGATION_REACH, word
            continue
        emotion = word_class(word)
        if emotion is not None and i > negated_until:
            votes.setdefault(emotion, []).append(f"{word}->{emotion}")
        elif emotion is not None:
            negated.append(f"'{negation} {word}'")
    if not votes and negated:
        raise NegatedExpression(f"unknown emotion {text.strip()!r}: it negates an emotion ({', '.join(negated)}), "
                                f"and the opposite of a class is no single class; {classes_hint()}")
    if not votes:
        raise UnknownExpression(f"unknown emotion {text.strip()!r}: none of its words names an emotion class; "
                                f"{classes_hint()}")
    ranked = sorted(votes.items(), key=lambda kv: -len(kv[1]))
    if len(ranked) > 1 and len(ranked[0][1]) == len(ranked[1][1]):
        tied = [e for e, v in ranked if len(v) == len(ranked[0][1])]
        raise UnknownExpression(f"unknown emotion {text.strip()!r}: its words name {' and '.join(tied)} equally; "
                                f"{classes_hint()}")
    emotion, voters = ranked[0]
    total = sum(len(v) for v in votes.values())
    evidence = tuple(v for _, vs in ranked for v in vs)
    return ExpressionMatch(text, emotion, len(voters) / total, "word list", evidence)


def emotion_class(conditioning) -> str:
    """The emotion-loss class of a ``conditioning`` config: ``expression_class`` when set, else the
    word-list class of ``expression`` (raises :class:`UnknownExpression`)."""
    if conditioning.expression_class:
        if conditioning.expression_class not in EMOTIONS:
            raise UnknownExpression(f"conditioning.expression_class={conditioning.expression_class!r} is not a "
                                    f"class; {classes_hint()}")
        return conditioning.expression_class
    return match_words(conditioning.expression).emotion


def intensity_target(emotion: str | int, eta: float, neutral: str = "neutral") -> torch.Tensor:
    """``[7]`` target distribution of the emotion loss at intensity η: η·onehot(emotion) + (1 − η)·onehot(neutral).

    η = 1 gives the paper's one-hot target (eq 8); η = 0 the neutral class; a neutral ``emotion`` gives
    the neutral one-hot for every η.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"intensity η must lie in [0, 1], got {eta}")
    target = torch.zeros(len(EMOTIONS), device="cpu")
    target[emotion_index(neutral)] += 1.0 - eta
    target[emotion_index(emotion)] += eta
    return target
