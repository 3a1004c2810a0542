"""Scratch book repositories for tests that build the book from small notebooks of their own."""

from __future__ import annotations

import shutil
from pathlib import Path


def parameters_cell(params_file: str) -> str:
    """The ``parameters`` cell every book notebook starts with (jupytext percent format)."""
    return f'''# %% tags=["parameters"]
params_file = "{params_file}"
extra_params = []
overrides = []
output_dir = "out"
interactive = False
'''


def scratch_book_repo(root: Path, repo_root: Path, *also_ignored: str) -> Path:
    """``root`` made a repository the book builds from: an empty ``notebooks/``, the real ``params/``
    and ``book/`` sources (without build outputs, the generated table of contents, ``also_ignored``)."""
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    shutil.copytree(repo_root / "params", root / "params")
    shutil.copytree(repo_root / "book", root / "book",
                    ignore=shutil.ignore_patterns("_build", "executed", "_toc.yml", *also_ignored))
    return root
