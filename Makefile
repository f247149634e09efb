# steno: `make up` starts everything and serves the chat page; `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STENO  := $(VENV)/bin/steno

.PHONY: up down status test install bench chromium

up: install
	$(STENO) up

down:
	@if [ -x $(STENO) ]; then $(STENO) down; else echo "nothing to stop: no venv"; fi

status: install
	$(STENO) status

test: install chromium
	$(STENO) up
	$(PY) -m pytest -ra

# The browser test drives Debian's Chromium (test tools cannot download their own browser here).
chromium:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for the browser test..."; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium \
	  || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }; }

bench: install
	$(STENO) up
	$(PY) -m benchmarks.pipeline
	$(PY) -m benchmarks.capacity

install: $(VENV)/.installed

# Reinstall only when the dependency list changes.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip wheel
	$(PY) -m pip install -q -e '.[test,triton]'
	@touch $@
