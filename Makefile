# steno: `make up` starts everything and serves the chat page; `make test` runs the whole suite.
# CLUSTER=1 (`make up CLUSTER=1`, `make status CLUSTER=1`, `make down CLUSTER=1`): the cluster mode,
# beside the single-node stack (README, "Cluster mode").
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STENO  := $(VENV)/bin/steno
MODE   := $(if $(CLUSTER),--cluster)

.PHONY: up down status test lint install bench chromium k8s-tools k8s-validate

up: install
	$(STENO) up $(MODE)

down:
	@if [ -x $(STENO) ]; then $(STENO) down $(MODE); else echo "nothing to stop: no venv"; fi

status: install
	$(STENO) status $(MODE)

# The cluster tests run in a second pytest, with the cluster's settings; their fixture starts the
# cluster stack beside the single-node one if it is not up (README, "Cluster mode").
test: lint chromium k8s-tools
	$(STENO) up
	$(PY) -m pytest -ra -m "not cluster"
	STENO_PROFILE=cluster $(PY) -m pytest -ra -m cluster tests/cluster

# Lint, format, types and DESIGN.md's layering (each configured in pyproject.toml), before any test.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The browser test drives Debian's Chromium (test tools cannot download their own browser here).
chromium:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for the browser test..."; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium \
	  || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }; }

# kustomize and kubeconform for the offline validation of infra/k8s: built from their Go modules at
# the versions pinned in infra/k8s/tools.py, once per machine (.stack/cache/go-tools). Needs Go.
k8s-tools: install
	$(PY) -m infra.k8s.tools

# Render infra/k8s with kustomize and check it with kubeconform -strict against infra/k8s/schemas,
# offline: a validation of the manifests, not a deployment.
k8s-validate: k8s-tools
	$(PY) -m pytest tests/unit/test_k8s_manifests.py -q

bench: install
	$(STENO) up
	$(PY) -m benchmarks.pipeline
	$(PY) -m benchmarks.hops
	$(PY) -m benchmarks.capacity
	$(PY) -m benchmarks.idle_streams
	$(PY) -m benchmarks.triton_transport
	$(PY) -m benchmarks.long_chats
	$(PY) -m benchmarks.window_anchors

install: $(VENV)/.installed

# Reinstall only when the dependency list changes.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip wheel
	$(PY) -m pip install -q -e '.[test,triton]'
	@touch $@
