"""The book pipeline: jupytext -> papermill with a params file -> executed notebook; failures reported."""

import json
import shutil

import nbformat
import pytest
from helpers_book import parameters_cell, scratch_book_repo
from helpers_book_outputs import output_problems

from sie3d.book import build_book, discover_notebooks, notebook_title, seen_from

OK_NOTEBOOK = '''# %% [markdown]
# # A tiny page

''' + parameters_cell("../params/quick.yaml") + '''
# %%
from sie3d.config import load_config
config = load_config(params_file, *extra_params, overrides=overrides)
print("PRESET", config.preset, config.guidance.delta_t)
'''

FAILING_NOTEBOOK = '''# %% tags=["parameters"]
params_file = ""

# %%
x = 1

# %%
raise ValueError("deliberate failure in cell three")
'''


@pytest.fixture
def scratch_repo(tmp_path, repo_root):
    return scratch_book_repo(tmp_path, repo_root)


def test_discovery_and_title(repo_root):
    names = [p.name for p in discover_notebooks(repo_root / "notebooks")]
    assert names and names == sorted(names) and names[0] == "00_overview.py"
    assert notebook_title(repo_root / "notebooks/00_overview.py").startswith("Overview")


def test_executes_with_params_and_reports_failures(scratch_repo):
    (scratch_repo / "notebooks/00_ok.py").write_text(OK_NOTEBOOK)
    (scratch_repo / "notebooks/01_broken.py").write_text(FAILING_NOTEBOOK)
    (scratch_repo / "notebooks/02_after.py").write_text(OK_NOTEBOOK)
    result = build_book([scratch_repo / "params/quick.yaml"], ["guidance.delta_t=33"],
                        repo_root=scratch_repo, build_html=False, log=lambda *_: None)
    by_name = {n.name: n for n in result.notebooks}
    assert by_name["00_ok"].ok and by_name["02_after"].ok  # the one after the failure still ran
    assert not by_name["01_broken"].ok
    assert "ValueError" in by_name["01_broken"].error and "deliberate failure" in by_name["01_broken"].error
    assert "cell" in by_name["01_broken"].error
    executed = nbformat.read(scratch_repo / "book/executed/00_ok.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "PRESET quick 33" in text  # papermill injected the params file and the override
    assert not result.ok


@pytest.mark.slow
def test_builds_html_with_a_page_per_notebook(scratch_repo, repo_root):
    shutil.copy(repo_root / "notebooks/00_overview.py", scratch_repo / "notebooks/00_overview.py")
    result = build_book([scratch_repo / "params/quick.yaml"], repo_root=scratch_repo, log=lambda *_: None)
    assert result.ok, result.build_error or [n.error for n in result.notebooks]
    html = scratch_repo / "book/_build/html"
    assert (html / "index.html").is_file() and (html / "executed/00_overview.html").is_file()
    page = (html / "executed/00_overview.html").read_text()
    assert "Traceback" not in page and "The pipeline" in page
    assert output_problems(scratch_repo / "book/executed/00_overview.ipynb") == []  # no reprs, paths, raw dicts
    manifest = json.loads((scratch_repo / "book/executed/run_manifest.json").read_text())
    assert manifest["preset"] == "quick" and manifest["notebooks"][0]["ok"]
    assert "tiny" in (html / "intro.html").read_text()  # the intro states the preset and models


def test_pages_name_repository_paths_relative_to_the_notebooks(tmp_path):
    notebooks = tmp_path / "repo" / "notebooks"
    assert seen_from(tmp_path / "repo" / "params" / "quick.yaml", notebooks) == "../params/quick.yaml"
    assert seen_from(tmp_path / "repo" / "runs" / "book" / "04_generate", notebooks) == "../runs/book/04_generate"
    assert seen_from(tmp_path / "elsewhere.yaml", notebooks) == str(tmp_path / "elsewhere.yaml")
