# APG Workflow Orchestration — the everyday commands.
#
#   make run     web (PORT, default 8080) + 2 RQ workers + scheduler, embedded SQLite/Redis
#                unless DATABASE_URL / REDIS_URL are set
#   make test    the whole pytest suite (DATABASE_URL / REDIS_URL choose the services);
#                first installs Chromium for the browser tests when it is missing
#                (.ci/ensure-chromium: apt-get as root or with passwordless sudo)
#   make lint    ruff + mypy + the import contracts (lint-imports, pyproject.toml)
#   make clean   remove the virtualenv, caches and build leftovers (keeps instance/)
#
# The only requirement is Python 3.11+ as `python3` (or `make PYTHON=python3.12 ...`);
# `make test` also needs Chromium, which it installs itself where apt-get may.
# The virtualenv lives in .venv; dependencies are (re)installed only when
# pyproject.toml is newer than the stamp file .venv/.installed.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_FLAGS := --disable-pip-version-check --no-input

.PHONY: run test lint clean venv check-python chromium

venv: $(STAMP)

check-python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "error: '$(PYTHON)' not found. Install Python 3.11 or newer," \
	       "or point make at one: make PYTHON=/path/to/python3.11 ..." >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || { \
	  echo "error: Python 3.11 or newer is required; '$(PYTHON)' is" \
	       "$$($(PYTHON) -c 'import platform; print(platform.python_version())')." \
	       "Use: make PYTHON=/path/to/python3.11 ..." >&2; exit 1; }

$(BIN)/python:
	@$(MAKE) --no-print-directory check-python
	@echo "Creating the virtualenv in $(VENV) with $$(command -v $(PYTHON))"
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "error: '$(PYTHON) -m venv' failed. On Debian/Ubuntu install the venv module:" \
	       "apt-get install python3-venv" >&2; exit 1; }

$(STAMP): pyproject.toml | $(BIN)/python
	@$(BIN)/python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || { \
	  echo "error: $(VENV) was made with Python < 3.11; run 'make clean' and try again." >&2; \
	  exit 1; }
	@echo "Installing the project and its test tools into $(VENV) (pip install -e '.[test]')"
	$(BIN)/python -m pip install $(PIP_FLAGS) -q -e ".[test]"
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/flask --app app up --port $${PORT:-8080}

# Before the virtualenv: a missing browser that cannot be installed stops `make test`
# at once, not after the install.
chromium:
	@.ci/ensure-chromium

test: chromium $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check app capability tests
	$(BIN)/mypy app capability
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .grimp_cache .import_linter_cache test-results
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +
