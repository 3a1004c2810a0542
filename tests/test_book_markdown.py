"""The built book renders Markdown outputs as Markdown: a table printed by a notebook is a <table>.

Also checks the page-opening pattern of the book's notebooks: an admonition at the top of the page
filled with numbers the notebook computes later (myst-nb ``glue``), and ``hide-input`` cells whose
code is folded while their output stays on the page.
"""

import re

import pytest
from helpers_book import parameters_cell, scratch_book_repo

from sie3d.book import build_book

NOTEBOOK = '''# %% [markdown]
# # Tables that render
#
# :::{admonition} What this page shows
# :class: note
# The run scored {glue:md}`best_score`.
# :::

''' + parameters_cell("../params/quick.yaml") + '''
# %% tags=["hide-input"]
from IPython.display import Markdown, display
from myst_nb import glue

rows = [("alpha", 0.125), ("beta", 0.5)]
lines = [("method", "score"), ("---", "---"), *((m, f"{s:.3f}") for m, s in rows)]
display(Markdown("\\n".join("| " + " | ".join(line) + " |" for line in lines)))
display(Markdown("* first **bold** point\\n* second point"))
glue("best_score", Markdown(f"**{max(s for _, s in rows):.3f}** (beta)"), display=False)
print("HIDDEN_CELL_RAN")
'''


@pytest.fixture
def scratch_repo(tmp_path, repo_root):
    return scratch_book_repo(tmp_path, repo_root)


def test_markdown_outputs_render_as_tables(scratch_repo):
    (scratch_repo / "notebooks/00_tables.py").write_text(NOTEBOOK)
    result = build_book([scratch_repo / "params/quick.yaml"], repo_root=scratch_repo, log=lambda *_: None)
    assert result.ok, result.build_error or [n.error for n in result.notebooks]
    page = (scratch_repo / "book/_build/html/executed/00_tables.html").read_text()
    body = page[page.index("<main"):]
    table = re.search(r"<table.*?</table>", body, re.S)
    assert table, "the Markdown table output is not a <table>"
    cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", table.group(0), re.S)
    assert [re.sub(r"<[^>]+>", "", c).strip() for c in cells] == ["method", "score", "alpha", "0.125",
                                                                    "beta", "0.500"]
    assert not re.search(r"\|\s*alpha\s*\|", body) and "| --- |" not in body  # no raw pipe rows
    assert re.search(r"<li>\s*<p>first <strong>bold</strong> point", body)  # lists and emphasis too
    # the admonition at the top holds the number computed further down the page
    admonition = re.search(r'<div class="note admonition">.*?</div>', body, re.S).group(0)
    assert "<strong>0.500</strong> (beta)" in admonition and "{glue" not in body
    # the hide-input cell: its source is folded (tag kept on the cell), its output is on the page
    assert re.search(r'<details class="[^"]*hide above-input', body) and "HIDDEN_CELL_RAN" in body
    # papermill's injected parameters are folded too (the notebook's own parameters cell is visible here)
    assert re.search(r'<div class="cell tag_injected-parameters tag_hide-input[ "]', body)
