"""A run's training log, ``metrics.jsonl``: one JSON record per logged iteration (``iteration``, the
unweighted ``loss_*`` terms, ``loss_total``, diagnostics, ``time_*`` seconds, ``expr_*`` coefficients),
appended as training goes, cut back on resume, and read by the run's summary and the book."""

from __future__ import annotations

import json
from pathlib import Path

from ..run_dir import METRICS_LOG


def append_record(run_dir: str | Path, record: dict[str, float]) -> None:
    """Append one record as a line of ``metrics.jsonl``."""
    with (Path(run_dir) / METRICS_LOG).open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def keep_before(run_dir: str | Path, iteration: int | None) -> None:
    """Drop the records logged at or after ``iteration`` (a resumed run re-logs them); ``None``: all."""
    path = Path(run_dir) / METRICS_LOG
    if iteration is None:
        path.unlink(missing_ok=True)
    elif path.is_file():
        kept = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["iteration"] < iteration]
        path.write_text("".join(line + "\n" for line in kept))


def summary_line(record: dict[str, float], total: int) -> str:
    """One quiet progress line: iteration, total and each loss term, seconds per iteration."""
    losses = " ".join(f"{k[5:]}={v:.4g}" for k, v in record.items() if k.startswith("loss_") and k != "loss_total")
    return (f"[train] it {record['iteration'] + 1}/{total} total={record.get('loss_total', float('nan')):.4g} "
            f"{losses} ({record.get('time_iteration', 0):.2f} s/it)")


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The records of ``metrics.jsonl`` (``[]`` when there is none)."""
    path = Path(run_dir) / METRICS_LOG
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
