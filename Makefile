# Rowsmith: `make demo` runs a sample CSV end to end on the local stack; `make test` runs every test.
# Both set up what they need (venv, pip, npm) and are quick the second time.
SHELL := /bin/bash
# Python 3.13 (the Function App's runtime version, infra/app/functions.bicep): PYTHON=... picks
# one; otherwise the first that runs as 3.13 of `python3.13` on PATH (a pyenv shim on PATH may
# not: it runs only the selected version), pyenv's 3.13.x (newest first), then `python3`.
IS_313 := -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))'
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in "$$(command -v python3.13)" \
	$$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13*/bin/python3.13 2>/dev/null | sort -rV) \
	"$$(command -v python3)"; do \
	[ -n "$$p" ] && "$$p" $(IS_313) 2>/dev/null && { echo "$$p"; break; }; done)
endif
PYTHON_VERSION_CHECK = $(PYTHON) $(IS_313) 2>/dev/null || { \
	echo "make: Rowsmith needs Python 3.13 (found: $(or $(PYTHON),none on PATH or in pyenv)). Install it (python.org, your package manager," >&2; \
	echo "      or pyenv install 3.13) and run make again, or name one: make setup PYTHON=/path/to/python3.13" >&2; \
	exit 1; }
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# infra/checks.mk adds the Bicep/checkov tooling and sets INFRA_DEPS (included before `test` reads it).
-include infra/checks.mk

.PHONY: setup demo test lint format bench clean

setup: $(STAMP) node_modules/.installed

# Reinstall only when a requirements file or pyproject changes.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON_VERSION_CHECK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) $(IS_313) || { \
		echo "make: $(VENV) is Python $$($(PY) -c 'import platform; print(platform.python_version())'), not 3.13: make clean, then make setup" >&2; exit 1; }
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(VENV)/bin/rowsmith demo samples/support_tickets.csv --pipeline triage

test: setup $(INFRA_DEPS)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q --cov --cov-report=term

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The benchmarks of docs/benchmarks.md: a table, benchmarks/results.json and benchmarks/out/details.json.
# About 20 minutes on a 2-core machine; `$(PY) -m benchmarks --quick` is the one-minute smoke run.
bench: setup
	$(PY) -m benchmarks --markdown

clean:
	rm -rf $(VENV) node_modules .rowsmith .pytest_cache .ruff_cache .coverage

