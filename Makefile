# The two commands the README promises: `make demo` and `make test`. Every target installs what it needs first.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: bootstrap control-plane servers image lint test test-quick demo bench clean

bootstrap:                ## Debian packages + .venv with the pinned dependencies
	@./scripts/bootstrap.sh

control-plane: bootstrap  ## build (once, cached in .cache/) kube-apiserver, etcd, helm and the kstatus checker
	@./scripts/build-control-plane.sh
	@./scripts/build-test-tools.sh

servers: bootstrap       ## build (once, cached in .cache/servers) Redis 7.2.6, 7.4.1, 8.0-m01 and Valkey 7.2.7, 8.0.1
	@./scripts/build-servers.sh

image: bootstrap          ## build the operator image with podman (stand-in base cached in .cache/image; skipped when up to date)
	@./scripts/build-image.sh

PYDIRS := $(wildcard operator tests bench scripts)

lint: bootstrap           ## ruff + mypy --strict on the package + the layer contract (.importlinter)
	@echo "==> ruff"; $(VENV)/bin/ruff check $(PYDIRS)
	@$(VENV)/bin/ruff format --check $(PYDIRS)
	@echo "==> mypy --strict"; $(VENV)/bin/mypy
	@echo "==> import contracts (.importlinter)"; $(VENV)/bin/lint-imports --no-cache --no-logo

test: lint control-plane servers image  ## the whole suite: unit, real Redis/Valkey (the matrix too), real control plane, the image
	@echo "==> pytest (whole suite)"; $(PY) -m pytest -q -ra

test-quick: lint          ## fast iteration: unit tests and real-Redis tests, no control plane, no matrix builds
	@$(PY) -m pytest -q -ra -m "not e2e and not slow"

demo: bootstrap          ## a local control plane, a Redis cluster, the operator, the sample libraries
	@./scripts/build-control-plane.sh --no-helm  # the demo installs no chart and checks no health: no helm, no test tools
	@$(PY) scripts/demo.py

bench: bootstrap          ## benchmarks that print figures (see README "Performance")
	@$(PY) bench/run.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
