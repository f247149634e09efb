# steno: `make up` starts everything and serves the chat page; `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STENO  := $(VENV)/bin/steno

.PHONY: up down status test install bench

up: install
	$(STENO) up

down:
	@if [ -x $(STENO) ]; then $(STENO) down; else echo "nothing to stop: no venv"; fi

status: install
	$(STENO) status

test: install
	$(STENO) up
	$(PY) -m pytest -ra

bench: install
	$(STENO) up
	$(PY) -m benchmarks.pipeline

install: $(VENV)/.installed

# Reinstall only when the dependency list changes.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip wheel
	$(PY) -m pip install -q -e '.[test,triton]'
	@touch $@
