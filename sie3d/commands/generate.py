"""``sie3d generate PHOTO... --expression TEXT [--intensity η[,η...]] --out DIR``: avatar run directories.

``--expression`` is free text: it enters the semantic embedding (eq 4) as written, and its emotion
class (the emotion loss's target) comes from :func:`sie3d.request.resolve_request` (the word list, or
with the real text encoder cached and ``models.prior=arc2face`` the nearest class by CLIP text
similarity). The mapping is printed and recorded in each run's ``summary.json`` (``expression_match``).

Several intensities make a sweep: one run per η in ``DIR/eta_<η>``, run in this process by the batch
engine (:func:`sie3d.batch.engine.run_batch`: finished ones are reused, interrupted ones resume), then
``DIR/sweep.png`` (frontal renders side by side), ``DIR/sweep.mp4`` (cross-faded) and
``DIR/sweep.json`` (every classifier's probability of the target class and the landmark measures, per η).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..config_args import add_config_arguments, config_from_args, params_files
from ._common import UserError

if TYPE_CHECKING:
    from ..run_dir import Summary


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
    parser.add_argument("--synthetic-weights", action="store_true",
                        help="a dry run of the real-weights prior: random full-size weights in the real layouts, "
                             "written to a temporary cache (~5 GB) and loaded through the real loaders (as sie3d check)")
    parser.add_argument("--workdir", default=None, help="folder of that temporary cache (default: the system temp dir)")
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


def _generate_one(photos, config, out: Path, resume: bool, extra_manifest: dict, **options) -> Summary:
    """One run of :func:`sie3d.generate.generate` (``extra_manifest`` carries how the text was matched,
    which the summary records)."""
    from ..generate import generate

    return generate(photos, config, out, resume=resume, progress=sys.stderr.isatty(),
                    extra_manifest=extra_manifest, **options)


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


def _sweep_cell(run, config, resume: bool, models, log) -> None:
    """The engine's work for one η of a sweep (:data:`sie3d.batch.engine.RunFn`)."""
    _generate_one(list(run.person.photos), config, run.run_dir, resume, run.info(), models=models,
                  log=log)


def _sweep(args, request, etas: list[float]) -> int:
    """One run per η through the batch engine, in this process; then the strip, video and table."""
    import imageio.v3 as iio

    from ..batch.engine import run_batch
    from ..batch.manifest import BatchRun, Person
    from ..render.media import save_image, save_turntable
    from ..render.sequences import crossfade_sequence, labelled_strip
    from ..run_dir import FRONTAL_RENDER, read_summary
    from ..runtime import write_json_atomic

    out = Path(args.out)
    person = Person(Path(args.photos[0]).stem, tuple(Path(p).resolve() for p in args.photos))
    params = tuple(Path(p).resolve() for p in params_files(args))
    cells = [BatchRun(sweep_run_name(eta), out / sweep_run_name(eta), person, "full", replace(request, intensity=eta),
                      params, tuple(args.overrides)) for eta in etas]
    result = run_batch(cells, out, run_fn=_sweep_cell, evaluate_fn=None, progress=False, log=print, serial=True)
    for eta, outcome in zip(etas, result.outcomes):
        print(f"[sweep] η={eta:g}: {outcome.run_dir} {outcome.status}"
              + (" (finished with the same params, reused)" if outcome.status == "skipped" else ""))
    result.raise_for_failures()
    records, images, labels = [], [], []
    for eta, cell in zip(etas, cells):
        record = sweep_record(eta, cell.run_dir, read_summary(cell.run_dir), request.emotion)
        records.append(record)
        images.append(iio.imread(cell.run_dir / FRONTAL_RENDER)[..., :3])
        probs = " ".join(f"{k}={v:.2f}" for k, v in record["p_target"].items())
        labels.append(f"eta={eta:g} p({request.emotion}) {probs}")
        print(f"[sweep] η={eta:g}: p({request.emotion}) {probs or 'n/a (no face found)'}")
    save_image(labelled_strip(images, labels), out / "sweep.png")
    save_turntable(crossfade_sequence(images), out / "sweep.mp4", fps=12)
    write_json_atomic(out / "sweep.json", {"expression_match": request.match.as_dict(), "emotion": request.emotion,
                                            "runs": records})
    print(f"sweep: {out}/sweep.png  {out}/sweep.mp4  {out}/sweep.json")
    print(json.dumps({f"{r['eta']:g}": r["p_target"] for r in records}))
    return 0


def run(args) -> int:
    if not args.synthetic_weights:
        return _run(args, config_from_args(args))
    import importlib
    import shutil
    import tempfile

    from ..runtime import resolve_device
    from ._synthetic import dry_run_config, model_home, writing_weights

    config = config_from_args(args)
    if len(parse_intensities(args.intensity) or []) > 1:
        raise UserError("--synthetic-weights makes one run (its weights live for one process); give one --intensity")
    if config.models.prior != "arc2face":
        raise UserError(f"--synthetic-weights stands in for the real prior's weights; this preset has "
                        f"models.prior={config.models.prior}")
    config, notes = dry_run_config(config, resolve_device(config.run.device))
    workdir = Path(tempfile.mkdtemp(prefix="sie3d-synthetic-", dir=args.workdir))
    try:
        with model_home(workdir, synthetic=True) as home:
            for note in notes:
                print(f"[synthetic] dry run: {note}")
            with writing_weights(home, config.run.seed):
                importlib.import_module("sie3d.diffusion.prior")  # its diffusers import overlaps the writing
            return _run(args, config)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(args, config) -> int:
    from ..request import resolve_request

    etas = parse_intensities(args.intensity)
    request = resolve_request(args.expression if args.expression is not None else config.conditioning.expression,
                              etas[0] if etas else None, args.accessory, config)  # a bad text fails at once
    config = request.apply(config)
    print(f"expression: {request.match.describe()}")
    try:
        if etas is not None and len(etas) > 1:
            return _sweep(args, request, etas)
        summary = _generate_one(args.photos, config, Path(args.out), args.resume,
                                {"expression_match": request.match.as_dict()})
    except KeyboardInterrupt:
        print(f"sie3d generate: interrupted; continue with: sie3d generate ... --out {args.out}"
              + ("" if etas is not None and len(etas) > 1 else " --resume"), file=sys.stderr)
        return 130
    _print_identity(summary, Path(args.out))
    return 0
