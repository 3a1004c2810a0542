"""Flat rows, CSV files and the Markdown report of an evaluation (see :func:`sie3d.evaluation.evaluate.evaluate_runs`)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .evaluator import EMOTION_ROLES, mean_or_none
from .features import FRECHET_LABELS, KID_LABELS
from .paper_tables import markdown_table

METRICS_JSON = "metrics.json"
METRICS_CSV = "metrics.csv"
RUNS_CSV = "runs.csv"
GROUPS_CSV = "groups.csv"
TABLE_MD = "metrics.md"
EVALUATION_JSON = "evaluation.json"


def flat_row(metrics: dict[str, Any]) -> dict[str, Any]:
    """One CSV row of a run's metrics (scalars only; per-render details stay in the JSON)."""
    ident, emo, dist = metrics["identity"], metrics["emotion"], metrics["distribution"]
    row = {
        "run": metrics["run"], "group": metrics["group"], "preset": metrics["preset"],
        "n_renders": metrics["n_renders"],
        "id_model": ident["model"], "id_frontal": ident["frontal"], "id_mean": ident["mean"], "id_min": ident["min"],
        "id_renders_with_face": ident["n_renders_with_face"], "target_expression": emo["target"],
    }
    conditioning = metrics.get("identity_conditioning") or {}
    row.update({"id_conditioning_model": conditioning.get("model"), "id_conditioning_frontal": conditioning.get("frontal"),
                "id_conditioning_mean": conditioning.get("mean")})
    for role, _ in EMOTION_ROLES:
        entry = emo[role]
        row.update({f"{role}_classifier": entry["classifier"], f"{role}_available": entry["available"],
                    f"{role}_nps": entry["nps"], f"{role}_p_neutral": entry["p_neutral_mean"],
                    f"{role}_accuracy": entry["accuracy"]})
    row.update({"distance_space": dist["space"], "frechet_label": dist["frechet_label"], "frechet": dist["frechet"],
                "kid_label": dist["kid_label"], "kid_mean": dist["kid_mean"], "kid_std": dist["kid_std"],
                "distance_note": dist["note"]})
    return row


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def group_summary(name: str, results: list[dict[str, Any]], distribution: dict[str, Any]) -> dict[str, Any]:
    """One row of ``groups.csv``: the runs of a group pooled (means of per-run metrics, pooled distance)."""
    summary = {"group": name, "runs": len(results), "renders": sum(r["n_renders"] for r in results),
               "id_frontal": mean_or_none([r["identity"]["frontal"] for r in results]),
               "id_mean": mean_or_none([r["identity"]["mean"] for r in results]),
               "id_conditioning_frontal": mean_or_none([(r.get("identity_conditioning") or {}).get("frontal")
                                                        for r in results]),
               "id_conditioning_mean": mean_or_none([(r.get("identity_conditioning") or {}).get("mean")
                                                     for r in results])}
    for role, _ in EMOTION_ROLES:
        entries = [r["emotion"][role] for r in results]
        summary[f"{role}_classifier"] = "/".join(sorted({e["classifier"] for e in entries}))
        summary[f"{role}_nps"] = mean_or_none([e["nps"] for e in entries])
        summary[f"{role}_accuracy"] = mean_or_none([e["accuracy"] for e in entries])
    summary.update({"frechet": distribution["frechet"], "kid_mean": distribution["kid_mean"],
                    "kid_std": distribution["kid_std"], "n_reference": distribution["n_reference"],
                    "n_renders_embedded": distribution["n_renders"], "distance_note": distribution["note"]})
    return summary


def markdown_report(evaluation: dict[str, Any]) -> str:
    """``metrics.md``: the pooled and per-run tables with the models that produced them."""
    info = evaluation["models"]
    frechet, kid_label = FRECHET_LABELS[info["space"]], KID_LABELS[info["space"]]
    lines = [
        f"# Evaluation of {len(evaluation['runs'])} run(s)",
        "",
        f"- distribution distance: **{frechet}**; {kid_label} (mean ± std over subsets); features: "
        f"{info['feature_model']}; reference: {evaluation['reference']}",
        f"- identity: {info['identity']} cosine similarity (held-out judge; detector {info['detector']})"
        + (f"; {'; '.join(info['identity_notes'])}" if info["identity_notes"] else "")
        + (f"; beside it ID with the encoder that conditions the run: {info['identity_conditioning']}"
           if info.get("identity_conditioning") else ""),
        f"- emotion: NPS = mean -ln p_neutral; accuracy = top class equals the target expression; "
        f"classifiers unavailable: {', '.join(info['unavailable_classifiers']) or 'none'}",
        "",
        "## Pooled per group",
        "",
    ]
    headers = ["group", "runs", "renders", f"{frechet} ↓", f"KID ↓ ({info['space']})", "ID frontal ↑", "ID mean ↑",
               "ID mean ↑ cond. enc.", "NPS ↓ loss clf", "NPS ↓ held-out clf", "acc ↑ loss clf", "acc ↑ held-out clf",
               "loss / held-out clf"]
    rows = [[g["group"], g["runs"], g["renders"], _fmt(g["frechet"]),
             "n/a" if g["kid_mean"] is None else f"{g['kid_mean']:.4f} ± {g['kid_std']:.4f}",
             _fmt(g["id_frontal"]), _fmt(g["id_mean"]), _fmt(g.get("id_conditioning_mean")),
             _fmt(g["loss_nps"]), _fmt(g["held_out_nps"]),
             _fmt(g["loss_accuracy"], 2), _fmt(g["held_out_accuracy"], 2),
             f"{g['loss_classifier']} / {g['held_out_classifier']}"] for g in evaluation["groups"]]
    lines += [markdown_table(headers, rows), "", "## Per run", ""]
    headers = ["run", "group", "target", "ID frontal ↑", "ID mean ↑ (faces/renders)", "ID frontal ↑ cond. enc.",
               "NPS ↓ loss clf",
               "NPS ↓ held-out clf", "acc ↑ loss clf", "acc ↑ held-out clf", f"{frechet} ↓"]
    rows = []
    for r in evaluation["runs"]:
        ident, emo = r["identity"], r["emotion"]
        rows.append([r["run"], r["group"], emo["target"], _fmt(ident["frontal"]),
                     f"{_fmt(ident['mean'])} ({ident['n_renders_with_face']}/{r['n_renders']})",
                     _fmt((r.get("identity_conditioning") or {}).get("frontal")),
                     _fmt(emo["loss"]["nps"]), _fmt(emo["held_out"]["nps"]), _fmt(emo["loss"]["accuracy"], 2),
                     _fmt(emo["held_out"]["accuracy"], 2), _fmt(r["distribution"]["frechet"])])
    lines += [markdown_table(headers, rows), ""]
    notes = sorted({f"{role} classifier {r['emotion'][role]['classifier']}: {r['emotion'][role]['note']}"
                    for r in evaluation["runs"] for role, _ in EMOTION_ROLES if r["emotion"][role]["note"]})
    notes += sorted({f"group {g['group']}: {g['distance_note']}" for g in evaluation["groups"] if g["distance_note"]})
    if notes:
        lines += ["Notes:", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(lines)
