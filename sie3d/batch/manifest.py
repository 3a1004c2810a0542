"""Batch manifests: a YAML file that expands into a grid of runs with stable run-directory names.

::

    params: params/quick.yaml            # a preset, or a list: preset then deltas applied to every run
    overrides: ["train.iterations=30"]   # dotted overrides, as `--set`
    photos: [a.jpg, people/]             # files, or folders holding one folder (or one photo) per person
    photos_per_person: 1                 # optional: the first N photos (sorted) of a person's folder
    expressions: [neutral, smiling]      # optional free text (default: neutral), as `sie3d generate` takes it
    intensities: [0.5, 1.0]              # optional η of eq 6 (default: the preset's)
    accessories: ["", wearing glasses]   # optional ("" = none; default: the preset's)
    ablations: [full, sds]               # optional: names of sie3d.evaluation.ablations.ABLATIONS, or all
    out: runs/batch

Relative paths are relative to the working directory, as for every ``sie3d`` command. Each person is
a photo file (named by its stem) or a sub-folder of a listed folder (named by the folder; all its
photos are that person's, identity embeddings averaged). Runs go to
``out/<ablation>/<person>__<expression>[__eta<η>][__<accessory>]``, the layout
:mod:`sie3d.evaluation.evaluate` groups by ablation. Every (expression, intensity, accessory) is
resolved once, when the manifest loads, by :func:`sie3d.request.resolve_request` (word list, then CLIP
with the real prior), so a text it refuses stops the batch before any work. :func:`ablation_spec`
builds the ablation grid of ``sie3d ablations`` the same way.
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..config import Config, ConfigError, load_config
from ..evaluation.ablations import ABLATIONS
from ..face.expression_text import UnknownExpression
from ..request import Request, resolve_request
from ..runtime import ModelCache

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # files of a folder taken as photos
KEYS = ("params", "overrides", "photos", "photos_per_person", "expressions", "intensities", "accessories",
        "ablations", "out")


class ManifestError(ValueError):
    """The batch manifest is malformed (the message names the key and the fix)."""


@dataclass(frozen=True)
class Person:
    """One identity: a name (run-directory prefix) and its photo files."""

    name: str
    photos: tuple[Path, ...]


@dataclass(frozen=True)
class BatchRun:
    """One cell of the grid: who, which request, which params, where."""

    name: str  # run directory relative to the batch's out: "<ablation>/<person>__<expression>..."
    run_dir: Path
    person: Person
    ablation: str
    request: Request  # resolved by sie3d.request.resolve_request
    params: tuple[Path, ...]  # preset, deltas, then the ablation's delta
    overrides: tuple[str, ...]

    def config(self) -> Config:
        """The resolved config of this run (preset + deltas + overrides + the request)."""
        return self.request.apply(load_config(*self.params, overrides=list(self.overrides)))

    def info(self) -> dict[str, Any]:
        """What the run's manifest records about its place in the grid (and how its text was matched)."""
        return {"batch_run": self.name, "ablation": self.ablation, "identity": self.person.name,
                **self.request.as_dict()}


@dataclass(frozen=True)
class BatchSpec:
    """A parsed manifest; :meth:`runs` expands it."""

    params: tuple[Path, ...]
    overrides: tuple[str, ...]
    people: tuple[Person, ...]
    requests: tuple[Request, ...]  # every (expression, intensity, accessory), in that nesting order
    ablations: tuple[str, ...]
    out: Path

    def runs(self) -> list[BatchRun]:
        """Every (ablation, person, request), in that nesting order."""
        deltas = {name: delta for name, delta, _ in ABLATIONS}
        cells = []
        for ablation, person, request in itertools.product(self.ablations, self.people, self.requests):
            name = f"{ablation}/{person.name}__{request.text}"
            if request.intensity is not None:
                name += f"__eta{request.intensity:g}"
            if request.accessory:
                name += f"__{slug(request.accessory)}"
            params = self.params + ((deltas[ablation],) if deltas[ablation] is not None else ())
            cells.append(BatchRun(name, self.out / name, person, ablation, request, params, self.overrides))
        return cells


def resolve_requests(expressions: Sequence[str], intensities: Sequence[float | None],
                     accessories: Sequence[str | None], config: Config) -> list[Request]:
    """Every (expression, intensity, accessory) resolved by :func:`sie3d.request.resolve_request`.

    Raises:
        ManifestError: a text names no class, or an η is not in [0, 1] (the message names the key).
    """
    models, requests = ModelCache(), []  # the CLIP text encoder, loaded at most once
    for expression, intensity, accessory in itertools.product(expressions, intensities, accessories):
        try:
            requests.append(resolve_request(expression, intensity, accessory, config, models))
        except UnknownExpression as exc:
            raise ManifestError(f"expressions: {exc}") from None
        except ValueError as exc:
            raise ManifestError(f"intensities: {exc}") from None
    return requests


def ablation_spec(photos: Sequence[str | Path], expressions: Sequence[str], params: Sequence[str | Path],
                  out: str | Path, ablations: Sequence[str] | None = None, overrides: Sequence[str] = ()) -> BatchSpec:
    """The ablation grid (``sie3d ablations``, notebook 05): one photo per identity × expression × ablation.

    Runs go to ``out/<ablation>/<photo stem>__<expression>``.

    Args:
        photos: one photo file per identity (distinct stems).
        expressions: free text, resolved as ``sie3d generate --expression`` resolves it.
        params: preset, then deltas applied to every run (the ablation's delta comes last).
        ablations: names of :data:`sie3d.evaluation.ablations.ABLATIONS` (None: all).
        overrides: dotted overrides applied to every run.

    Raises:
        ManifestError: a missing photo, repeated stems, an unknown ablation or text (before any run).
    """
    known = [name for name, _, _ in ABLATIONS]
    unknown = [a for a in ablations or () if a not in known]
    if unknown:
        raise ManifestError(f"unknown ablation(s) {', '.join(unknown)}; known: {', '.join(known)}")
    files = tuple(Path(p).resolve() for p in params)
    config = load_config(*files, overrides=list(overrides))
    return BatchSpec(params=files, overrides=tuple(overrides), people=tuple(find_people(photos)),
                     requests=tuple(resolve_requests(expressions, [None], [None], config)),
                     ablations=tuple(a for a in known if ablations is None or a in ablations),
                     out=Path(out).resolve())


def slug(text: str) -> str:
    """``"Wearing glasses!"`` -> ``"wearing_glasses"`` (lower-case letters, digits and ``_``)."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)


def find_people(entries: Sequence[str | Path], photos_per_person: int | None = None) -> list[Person]:
    """Photo files and folders -> people (see the module docstring).

    Raises:
        ManifestError: a path is missing, a folder holds no photo or person folder, two people share
            a name, or a person's folder holds no photo.
    """
    people = []
    for entry in entries:
        path = Path(entry)
        if path.is_file():
            people.append(Person(path.stem, (path.resolve(),)))
        elif path.is_dir():
            found = [Person(p.stem, (p.resolve(),)) for p in _images(path)]
            for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
                photos = _images(folder)[:photos_per_person]
                if not photos:
                    raise ManifestError(f"person folder {folder} holds no photo ({', '.join(PHOTO_SUFFIXES)})")
                found.append(Person(folder.name, tuple(p.resolve() for p in photos)))
            if not found:
                raise ManifestError(f"{path} holds neither photos nor one folder per person")
            people.extend(found)
        else:
            raise ManifestError(f"photos: {path} not found")
    names = [p.name for p in people]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ManifestError(f"people must have distinct names (they name the run directories); "
                            f"repeated: {', '.join(repeated)}")
    return people


def _list(data: dict[str, Any], key: str, default: Sequence[Any]) -> list[Any]:
    value = data.get(key, default)
    value = [value] if isinstance(value, (str, int, float)) else value
    if not isinstance(value, list) or not value:
        raise ManifestError(f"{key}: give a non-empty list")
    return value


def load_manifest(path: str | Path, overrides: Sequence[str] = (), out: str | Path | None = None) -> BatchSpec:
    """Read and check a batch manifest (every run's config is resolved once, so errors come first).

    Args:
        overrides: dotted overrides applied after the manifest's own.
        out: replaces the manifest's ``out``.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"cannot read the batch manifest {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: the top level must be a mapping ({', '.join(KEYS)})")
    for key in data:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            raise ManifestError(f"{path}: unknown key '{key}'" + (f"; did you mean '{close[0]}'?" if close else
                                                                 f"; known: {', '.join(KEYS)}"))
    for key in ("params", "photos"):
        if key not in data:
            raise ManifestError(f"{path}: '{key}' is required")
    if out is None and "out" not in data:
        raise ManifestError(f"{path}: 'out' is required (or pass --out)")
    per_person = data.get("photos_per_person")
    if per_person is not None and (not isinstance(per_person, int) or per_person < 1):
        raise ManifestError(f"photos_per_person must be a positive integer, got {per_person!r}")
    known = [name for name, _, _ in ABLATIONS]
    ablations = known if data.get("ablations") == "all" else [str(a) for a in _list(data, "ablations", ["full"])]
    for ablation in ablations:
        if ablation not in known:
            raise ManifestError(f"ablations: unknown '{ablation}'; known: {', '.join(known)} (or: all)")
    params = tuple(Path(p).resolve() for p in _list(data, "params", []))
    all_overrides = tuple(str(o) for o in data.get("overrides") or ()) + tuple(overrides)
    people = tuple(find_people(_list(data, "photos", []), per_person))
    try:
        config = load_config(*params, overrides=list(all_overrides))
        requests = resolve_requests([str(e) for e in _list(data, "expressions", ["neutral"])],
                                    _list(data, "intensities", [None]),
                                    [None if a is None else str(a) for a in _list(data, "accessories", [None])],
                                    config)
        spec = BatchSpec(params, all_overrides, people, tuple(requests), tuple(ablations),
                         Path(out if out is not None else data["out"]).resolve())
        for run in spec.runs():
            run.config()
    except ConfigError as exc:
        raise ManifestError(f"{path}: {exc}") from None
    return spec
