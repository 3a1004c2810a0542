"""``sie3d generate PHOTO... --expression TEXT [--intensity η[,η...]] --out DIR``: avatar run directories.

``--expression`` is free text: it enters the semantic embedding (eq 4) as written, and its emotion
class (the emotion loss's target) comes from the word list of :mod:`sie3d.face.expression_text` or,
with the real text encoder cached and ``models.prior=arc2face``, the nearest class by CLIP text
similarity (:mod:`sie3d.diffusion.expression_match`). The mapping is printed and recorded in each run's
``summary.json`` (``expression_match``).

Several intensities make a sweep: one run per η in ``DIR/eta_<η>`` (finished ones are reused), then
``DIR/sweep.png`` (frontal renders side by side), ``DIR/sweep.mp4`` (cross-faded) and
``DIR/sweep.json`` (every classifier's probability of the target class and the landmark measures, per η).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ._common import UserError, add_config_arguments, config_from_args

if TYPE_CHECKING:
    from ..run_dir import Summary

#: a CLIP-similarity class is accepted at this probability (softmax over the 7 classes) or more
MIN_CLIP_PROBABILITY = 0.5


def add_parser(sub, name, help_text):
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("photos", nargs="+", metavar="PHOTO",
                        help="photo(s) of one person (several: identity embeddings averaged)")
    parser.add_argument("--expression", default=None,
                        help='free text, e.g. "smiling broadly", surprised, furious; mapped to one of angry, '
                             "disgust, fear, happy, sad, surprise, neutral for the emotion loss")
    parser.add_argument("--intensity", default=None, metavar="η[,η...]",
                        help="η in [0, 1] (paper eq 6); several, comma-separated, make one run per η under --out")
    parser.add_argument("--accessory", default=None, help='free text, e.g. "wearing glasses"')
    parser.add_argument("--out", required=True, help="run directory to create (or resume); the sweep's folder")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    add_config_arguments(parser, default_params="params/quick.yaml")
    return parser


def parse_intensities(text: str | None) -> list[float] | None:
    """``"0,0.25,1"`` -> ``[0.0, 0.25, 1.0]`` (None stays None); each in [0, 1], no repeats."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--intensity {text!r}: give numbers in [0, 1], comma-separated (e.g. 0,0.5,1)") from None
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if not values or bad:
        raise UserError(f"--intensity must be in [0, 1], got {text}")
    if len({sweep_run_name(v) for v in values}) != len(values):
        raise UserError(f"--intensity {text!r} repeats a value (to two decimals)")
    return values


def sweep_run_name(eta: float) -> str:
    """Run directory of one η in a sweep: ``eta_0.25``."""
    return f"eta_{eta:.2f}"


def resolve_expression(text: str, config):
    """The :class:`~sie3d.face.expression_text.ExpressionMatch` of ``text``: word list, else CLIP (real encoder only).

    Raises:
        UserError: no confident class (one line listing the classes).
    """
    from ..diffusion.expression_match import load_sd15_text_encoder, nearest_class
    from ..face.emotion import EMOTIONS
    from ..face.expression_text import ExpressionMatch, UnknownExpression, match_words
    from ..weights import ModelNotAvailable

    try:
        return match_words(text)
    except UnknownExpression as exc:
        if config.models.prior != "arc2face":  # the tiny prior's encoder is random: word list only
            raise UserError(str(exc)) from None
        try:
            tokenizer, encoder = load_sd15_text_encoder()
        except ModelNotAvailable:
            raise UserError(str(exc)) from None
        near = nearest_class(tokenizer, encoder, text, EMOTIONS, config.conditioning.expression_template)
        if near.probability < MIN_CLIP_PROBABILITY:
            raise UserError(f"{exc} (CLIP text similarity: nearest {near.emotion}, p={near.probability:.2f} "
                            f"< {MIN_CLIP_PROBABILITY})") from None
        evidence = tuple(f"{c}:{s:.3f}" for c, s in near.similarities.items())
        return ExpressionMatch(text, near.emotion, near.probability, "clip text similarity", evidence)


def _generate_one(args, config, out: Path, match) -> Summary:
    from ..generate import generate
    from ..run_dir import write_summary

    try:
        summary = generate(args.photos, config, out, resume=args.resume, progress=sys.stderr.isatty(),
                           extra_manifest={"expression_match": match.as_dict()})
    except KeyboardInterrupt:
        print(f"sie3d generate: interrupted; continue with: sie3d generate ... --out {args.out} --resume",
              file=sys.stderr)
        raise
    summary.expression_match = match.as_dict()
    write_summary(out, summary)
    return summary


def _print_identity(summary: Summary, out: Path) -> None:
    frontal = summary.frontal
    print(f"avatar: {out}/avatar.ply  turntable: {out}/turntable.mp4")
    if frontal.face_found:
        print(f"identity (dlib distance, photo vs frontal render): {frontal.dlib_distance:.3f} "
              f"({'same person' if frontal.dlib_distance < 0.6 else 'NOT the same person'} by dlib's 0.6 rule)")
    else:
        print("no face detected in the frontal render")


def sweep_record(eta: float, run_dir: Path, summary: Summary, emotion: str) -> dict:
    """One η of a sweep: every classifier's p(target class) on the frontal render, and its landmarks."""
    frontal = summary.frontal
    return {"eta": eta, "run_dir": str(run_dir),
            "p_target": {name: probs[emotion] for name, probs in frontal.emotions.items()},
            "landmarks": frontal.landmarks,
            "classifiers_missing": sorted(summary.classifiers_missing)}


def _sweep(args, config, etas: list[float], match) -> int:
    import imageio.v3 as iio

    from ..evaluation.ablations import is_generated, manifest_params_hash
    from ..render.media import save_image, save_turntable
    from ..render.sequences import crossfade_sequence, labelled_strip
    from ..run_dir import read_summary
    from ..runtime import write_json_atomic

    out = Path(args.out)
    records, images, labels = [], [], []
    for eta in etas:
        run_dir = out / sweep_run_name(eta)
        run_config = replace(config, conditioning=replace(config.conditioning, eta_expr=eta))
        if (is_generated(run_dir) and (run_dir / "summary.json").is_file()
                and manifest_params_hash(run_dir) == run_config.params_hash()):
            print(f"[sweep] η={eta:g}: {run_dir} is finished with the same params, reused")
            summary = read_summary(run_dir)
        else:
            print(f"[sweep] η={eta:g}: {run_dir}")
            summary = _generate_one(args, run_config, run_dir, match)
        record = sweep_record(eta, run_dir, summary, match.emotion)
        records.append(record)
        images.append(iio.imread(run_dir / "frontal.png")[..., :3])
        probs = " ".join(f"{k}={v:.2f}" for k, v in record["p_target"].items())
        labels.append(f"eta={eta:g} p({match.emotion}) {probs}")
        print(f"[sweep] η={eta:g}: p({match.emotion}) {probs or 'n/a (no face found)'}")
    save_image(labelled_strip(images, labels), out / "sweep.png")
    save_turntable(crossfade_sequence(images), out / "sweep.mp4", fps=12)
    write_json_atomic(out / "sweep.json", {"expression_match": match.as_dict(), "emotion": match.emotion,
                                            "runs": records})
    print(f"sweep: {out}/sweep.png  {out}/sweep.mp4  {out}/sweep.json")
    print(json.dumps({f"{r['eta']:g}": r["p_target"] for r in records}))
    return 0


def run(args) -> int:
    etas = parse_intensities(args.intensity)
    config = config_from_args(args)
    match = resolve_expression(args.expression if args.expression is not None else config.conditioning.expression,
                               config)  # before the pipeline is imported: a bad text fails at once
    from ..generate import configure

    config = configure(config, match.text, etas[0] if etas else None, args.accessory)
    config = replace(config, conditioning=replace(config.conditioning, expression_class=match.emotion))
    print(f"expression: {match.describe()}")
    try:
        if etas is not None and len(etas) > 1:
            return _sweep(args, config, etas, match)
        summary = _generate_one(args, config, Path(args.out), match)
    except KeyboardInterrupt:
        return 130
    _print_identity(summary, Path(args.out))
    return 0
