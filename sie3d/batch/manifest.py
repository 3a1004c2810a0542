"""Batch manifests: a YAML file that expands into a grid of runs with stable run-directory names.

::

    params: params/quick.yaml            # a preset, or a list: preset then deltas applied to every run
    overrides: ["train.iterations=30"]   # dotted overrides, as `--set`
    photos: [a.jpg, people/]             # files, or folders holding one folder (or one photo) per person
    photos_per_person: 1                 # optional: the first N photos (sorted) of a person's folder
    expressions: [neutral, happy]        # optional (default: neutral)
    intensities: [0.5, 1.0]              # optional η of eq 6 (default: the preset's)
    accessories: ["", wearing glasses]   # optional ("" = none; default: the preset's)
    ablations: [full, sds]               # optional: names of sie3d.evaluation.ablations.ABLATIONS, or all
    out: runs/batch

Relative paths are relative to the working directory, as for every ``sie3d`` command. Each person is
a photo file (named by its stem) or a sub-folder of a listed folder (named by the folder; all its
photos are that person's, identity embeddings averaged). Runs go to
``out/<ablation>/<person>__<expression>[__eta<η>][__<accessory>]``, the layout
:mod:`sie3d.evaluation.evaluate` groups by ablation.
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
    expression: str
    intensity: float | None
    accessory: str | None
    params: tuple[Path, ...]  # preset, deltas, then the ablation's delta
    overrides: tuple[str, ...]

    def config(self) -> Config:
        """The resolved config of this run (preset + deltas + overrides + the request)."""
        from ..generate import configure  # imported here: a worker unpickling a run stays light

        return configure(load_config(*self.params, overrides=list(self.overrides)),
                         self.expression, self.intensity, self.accessory)

    def info(self) -> dict[str, Any]:
        """What the run's manifest records about its place in the grid."""
        return {"batch_run": self.name, "ablation": self.ablation, "identity": self.person.name,
                "expression": self.expression, "intensity": self.intensity, "accessory": self.accessory}


@dataclass(frozen=True)
class BatchSpec:
    """A parsed manifest; :meth:`runs` expands it."""

    params: tuple[Path, ...]
    overrides: tuple[str, ...]
    people: tuple[Person, ...]
    expressions: tuple[str, ...]
    intensities: tuple[float | None, ...]
    accessories: tuple[str | None, ...]
    ablations: tuple[str, ...]
    out: Path

    def runs(self) -> list[BatchRun]:
        """Every (ablation, person, expression, intensity, accessory), in that nesting order."""
        from ..evaluation.ablations import ABLATIONS

        deltas = {name: delta for name, delta, _ in ABLATIONS}
        cells = []
        for ablation, person, expression, intensity, accessory in itertools.product(
                self.ablations, self.people, self.expressions, self.intensities, self.accessories):
            name = f"{ablation}/{person.name}__{expression}"
            if intensity is not None:
                name += f"__eta{intensity:g}"
            if accessory:
                name += f"__{slug(accessory)}"
            params = self.params + ((deltas[ablation],) if deltas[ablation] is not None else ())
            cells.append(BatchRun(name, self.out / name, person, ablation, expression, intensity, accessory,
                                  params, self.overrides))
        return cells


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
    from ..evaluation.ablations import ABLATIONS
    from ..face.expression_text import match_words

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
    expressions = [str(e) for e in _list(data, "expressions", ["neutral"])]
    for expression in expressions:
        try:
            match_words(expression)  # free text as `sie3d generate --expression` takes it
        except ValueError as exc:
            raise ManifestError(f"expressions: {exc}") from None
    intensities = _list(data, "intensities", [None])
    for eta in intensities:
        if eta is not None and not (isinstance(eta, (int, float)) and 0.0 <= eta <= 1.0):
            raise ManifestError(f"intensities: each must be a number in [0, 1], got {eta!r}")
    accessories = [None if a is None else str(a) for a in _list(data, "accessories", [None])]
    known = [name for name, _, _ in ABLATIONS]
    ablations = known if data.get("ablations") == "all" else [str(a) for a in _list(data, "ablations", ["full"])]
    for ablation in ablations:
        if ablation not in known:
            raise ManifestError(f"ablations: unknown '{ablation}'; known: {', '.join(known)} (or: all)")
    spec = BatchSpec(
        params=tuple(Path(p).resolve() for p in _list(data, "params", [])),
        overrides=tuple(str(o) for o in data.get("overrides") or ()) + tuple(overrides),
        people=tuple(find_people(_list(data, "photos", []), per_person)),
        expressions=tuple(expressions), intensities=tuple(intensities), accessories=tuple(accessories),
        ablations=tuple(ablations), out=Path(out if out is not None else data["out"]).resolve())
    try:
        for run in spec.runs():
            run.config()
    except ConfigError as exc:
        raise ManifestError(f"{path}: {exc}") from None
    return spec
