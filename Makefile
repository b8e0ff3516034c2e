# Set-up and run targets. Each builds .venv at the repository root first, from an explicit
# Python (3.12 or newer), so a fresh machine needs nothing else.
PYTHON_VERSION ?= 3.12
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run demo test bench venv

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

bench: venv
	$(PY) bench/sfu_forwarding.py
