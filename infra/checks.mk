# Bicep tooling for tests/infra, included by the root Makefile before its `test` rule.
# - .venv gets the parsers the tests import (requirements-infra.txt).
# - .venv/infra-tools gets checkov (infra/requirements-checkov.txt): its pins clash with
#   the app's, so it has a venv of its own, made from the same Python 3.13. It sits inside .venv so that .gitignore,
#   .funcignore (azd must not zip it into the app) and `make clean` already cover it.
# Reinstalls only when one of those files changes, like the root STAMP.

INFRA_TOOLS := $(VENV)/infra-tools
INFRA_STAMP := $(VENV)/.infra-installed
INFRA_DEPS := $(INFRA_STAMP)

.PHONY: infra-check

$(INFRA_STAMP): requirements-infra.txt infra/requirements-checkov.txt $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-infra.txt
	test -x $(INFRA_TOOLS)/bin/python || $(PY) -m venv $(INFRA_TOOLS)
	$(INFRA_TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check -r infra/requirements-checkov.txt
	touch $@

# Only the Bicep checks (syntax gate, policies, name consistency, checkov).
infra-check: setup $(INFRA_DEPS)
	$(PY) -m pytest -q tests/infra
