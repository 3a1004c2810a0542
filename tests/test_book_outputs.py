"""Every executed page of the book (``book/executed/*.ipynb``, written by ``sie3d book`` / ``make book``)
shows no bare repr, no path of the machine that built it and no raw dict. Reads the last build's
notebooks; builds nothing (the pages are skipped when no build is present)."""

import nbformat
import pytest
from helpers_book_outputs import output_problems


def _executed(repo_root):
    return sorted((repo_root / "book/executed").glob("[0-9][0-9]_*.ipynb"))


def test_the_check_finds_each_kind_of_leftover(tmp_path):
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "(np.float64(-0.5), np.float64(1.0))"}),
                    nbformat.v4.new_output("execute_result", {"text/plain": "Text(0.5, 1.0, 'title')"}),
                    nbformat.v4.new_output("stream", name="stdout", text="see /work/x/runs/a.md and /tmp/y\n"),
                    nbformat.v4.new_output("display_data", {"text/markdown": "| 1 | {'smile': 0.86} |"}),
                    nbformat.v4.new_output("execute_result", {"text/plain": "<matplotlib.image.AxesImage at 0x1>"})]
    clean = nbformat.v4.new_code_cell("y")
    clean.outputs = [nbformat.v4.new_output("display_data", {"image/png": "", "text/plain": "<Figure size 10x10>"}),
                     nbformat.v4.new_output("stream", name="stdout", text="runs/book/05/metrics.md, {x} ok\n")]
    hidden = nbformat.v4.new_code_cell("z", metadata={"tags": ["remove-stderr"]})
    hidden.outputs = [nbformat.v4.new_output("stream", name="stderr", text="/tmp/ray/session\n")]
    path = tmp_path / "01_page.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[cell, clean, hidden]), path)
    problems = output_problems(path)
    assert [p.split(": ", 1)[1].split(" ")[0] + " " + p.split(": ", 1)[1].split(" ")[1] for p in problems] == [
        "bare repr", "bare repr", "machine path", "machine path", "raw dict", "bare repr"]
    assert all(p.startswith("01_page.ipynb cell 0 ") for p in problems)


def test_every_executed_page_reads_cleanly(repo_root):
    pages = _executed(repo_root)
    if not pages:
        pytest.skip("no executed book here: `make book` writes book/executed/")
    problems = [p for page in pages for p in output_problems(page)]
    assert not problems, "\n".join(problems)


def test_the_injected_parameters_name_no_machine_path(tmp_path):
    injected = nbformat.v4.new_code_cell('params_file = "/work/repo/params/quick.yaml"\noutput_dir = "../runs/book/04"',
                                         metadata={"tags": ["injected-parameters", "hide-input"]})
    relative = nbformat.v4.new_code_cell('params_file = "../params/quick.yaml"', metadata={"tags": ["injected-parameters"]})
    path = tmp_path / "04_page.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[injected, relative]), path)
    assert output_problems(path) == ["04_page.ipynb cell 0 (injected parameters): machine path '/work/'"]
