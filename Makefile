# Set-up and run targets. Each builds .venv at the repository root first, from an explicit
# Python (3.12 or newer), so a fresh machine needs nothing else.
PYTHON_VERSION ?= 3.12
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run demo test test-fast lint bench venv

$(VENV)/.installed: pyproject.toml scripts/find-python
	scripts/find-python $(PYTHON_VERSION) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

run: venv
	$(PY) -m bot

demo: venv
	$(PY) scripts/demo

test: venv
	scripts/ensure-chromium
	scripts/ensure-iptables
	scripts/ensure-postgres
	scripts/ensure-redis
	$(PY) -m pytest -q -ra

# The fast lane: pure unit tests, no servers, peers or browsers (tests/unit/conftest.py
# refuses sockets), in seconds.
test-fast: venv
	$(PY) -m pytest -q tests/unit

# The lint gate: ruff (rules and format) and mypy, as configured in pyproject.toml.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: venv
	$(PY) bench/sfu_forwarding.py
