# The two commands a newcomer needs: `make test` and `make demo`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: deps test lint demo demo-down bench e2e-upstream clean-leftovers

deps:
	bash hack/install-deps.sh

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

demo: deps
	$(PY) -m localcluster.demo

demo-down:
	$(VENV)/bin/ovnkube-local down --name demo

# The Kubernetes project's network e2e suite on a fresh local cluster
# (E2E_SET=conformance|granular|services|netpol|network; see docs/E2E.md).
E2E_SET ?= conformance
E2E_PROCS ?= 1
e2e-upstream: deps
	bash hack/build-e2e.sh
	$(PY) -m localcluster.upstream_e2e --set $(E2E_SET) --procs $(E2E_PROCS) --report-dir _output/e2e-$(E2E_SET)

bench: deps
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Removes processes and namespaces a killed test run may have left behind.
clean-leftovers:
	$(PY) -m localcluster.sweep
