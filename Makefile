# Rowsmith: `make demo` runs a sample CSV end to end on the local stack; `make test` runs every test.
# Both set up what they need (venv, pip, npm) and are quick the second time.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# infra/checks.mk adds the Bicep/checkov tooling and sets INFRA_DEPS (included before `test` reads it).
-include infra/checks.mk

.PHONY: setup demo test lint format bench clean

setup: $(STAMP) node_modules/.installed

# Reinstall only when a requirements file or pyproject changes.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
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

