"""What an executed book notebook must not show a reader: bare Python reprs, machine paths, raw dicts."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

#: reprs a cell prints when its last line returns an object instead of showing it
BARE_REPRS = ("np.float64(", "np.int64(", "Text(", "<matplotlib", "<Axes")
#: the start of an absolute path on the machine that built the book
MACHINE_PATH = re.compile(r"(?<![\w.:/])/(?:work|tmp|home|root)/")
#: a Python dict printed as text: ``{'key': ...}`` or ``{"key": ...}``
RAW_DICT = re.compile(r"\{\s*['\"][^'\"]+['\"]\s*:")


def _texts(output) -> list[tuple[str, str]]:
    """(kind, text) pairs of one output that a reader sees as text."""
    if output.get("output_type") == "stream":
        return [("stream", output.get("text", ""))]
    data = output.get("data", {})
    return [(mime, str(data[mime])) for mime in ("text/plain", "text/markdown") if mime in data]


def output_problems(path: Path) -> list[str]:
    """One line per problem in the outputs of the executed notebook ``path`` (cells tagged
    ``remove-output``/``remove-cell`` are skipped, and stderr where ``remove-stderr`` drops it; a figure's own
    ``<Figure size ...>`` text is not a problem, the book shows its image; papermill's injected parameters,
    whose source the page shows, must name no path of the building machine either)."""
    notebook = nbformat.read(path, as_version=4)
    problems = []
    for index, cell in enumerate(notebook.cells):
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell.cell_type != "code" or tags & {"remove-output", "remove-cell"}:
            continue
        if "injected-parameters" in tags:  # the book shows its source, folded: the build's own parameters
            problems += [f"{path.name} cell {index} (injected parameters): machine path {m.group(0)!r}"
                         for m in MACHINE_PATH.finditer(cell.source)]
        for output in cell.get("outputs", []):
            if output.get("name") == "stderr" and "remove-stderr" in tags:
                continue  # the book drops it
            for kind, text in _texts(output):
                where = f"{path.name} cell {index} ({kind})"
                problems += [f"{where}: bare repr {r!r}" for r in BARE_REPRS if r in text]
                problems += [f"{where}: machine path {m.group(0)!r}" for m in MACHINE_PATH.finditer(text)]
                problems += [f"{where}: raw dict {m.group(0)!r}" for m in RAW_DICT.finditer(text)]
    return problems
