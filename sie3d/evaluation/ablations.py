"""The ablations: their names, params deltas and the paper's labels (what the grid is made of).

An ablation is a small YAML delta merged onto a preset (``params/ablations/*.yaml``). The grid of
runs over ablations × identities × expressions is built by :func:`sie3d.batch.manifest.ablation_spec`
and run (and evaluated) by :func:`sie3d.batch.engine.run_batch`; runs live at
``<out>/<ablation>/<identity>__<expression>/`` (the ablation directory name is what the evaluation
groups by). :func:`paper_rows` turns the grid's evaluation into rows beside the paper's tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # paper_tables imports matplotlib; batch manifests need only the definitions
    from .paper_tables import OurRow, Provenance

PARAMS_DIR = Path(__file__).resolve().parents[2] / "params"
ABLATIONS_DIR = PARAMS_DIR / "ablations"

#: (name, params delta or None for the full method, label); labels equal the paper's Table 2 rows
ABLATIONS: list[tuple[str, Path | None, str]] = [
    ("full", None, "full"),
    ("no_semantic_embedding", ABLATIONS_DIR / "no_semantic_embedding.yaml", "w/o semantic embedding"),
    ("no_emotion_loss", ABLATIONS_DIR / "no_emotion_loss.yaml", "w/o perceptual expression loss"),
    ("sds", ABLATIONS_DIR / "sds.yaml", "SDS instead of ISM"),
    ("released_code_conditioning", ABLATIONS_DIR / "released_code_conditioning.yaml",
     "released-code conditioning (Perp-Neg)"),
    ("no_expression_prior", ABLATIONS_DIR / "no_expression_prior.yaml", "w/o FACS prototype floor"),
]
#: the paper's Table 2 grid (page 05's main grid); the others decompose the offline expression
TABLE2_ABLATIONS = ("full", "no_semantic_embedding", "no_emotion_loss", "sds", "released_code_conditioning")
#: the offline expression taken apart: both parts, the prototype floor only, the emotion loss only
EXPRESSION_PARTS = {"full": "both", "no_emotion_loss": "FACS prototype only", "no_expression_prior": "emotion loss only"}


def ablation_label(name: str) -> str:
    for ablation, _, label in ABLATIONS:
        if ablation == name:
            return label
    raise KeyError(f"unknown ablation '{name}'; known: {', '.join(a for a, _, _ in ABLATIONS)}")


def paper_rows(evaluation: dict[str, Any]) -> tuple[list[OurRow], Provenance]:
    """Our group results as rows for :mod:`sie3d.evaluation.paper_tables` (groups named by ablation get the
    paper's labels) and the provenance line that must accompany them."""
    from .paper_tables import OurRow, Provenance

    labels = {name: label for name, _, label in ABLATIONS}
    rows = [OurRow(method=labels.get(g["group"], g["group"]), fid=g["frechet"], id=g["id_mean"],
                   nps_loss=g["loss_nps"], nps_held_out=g["held_out_nps"], n_runs=g["runs"])
            for g in evaluation["groups"]]
    presets = sorted({r["preset"] for r in evaluation["runs"]})
    groups = evaluation["groups"]
    provenance = Provenance(
        preset=", ".join(presets), frechet_label=evaluation["models"]["frechet_label"],
        identity_model=evaluation["models"]["identity"],
        loss_classifier="/".join(sorted({g["loss_classifier"] for g in groups})),
        held_out_classifier="/".join(
            name + (" (unavailable)" if name in evaluation["models"]["unavailable_classifiers"] else "")
            for name in sorted({g["held_out_classifier"] for g in groups})))
    return rows, provenance
