# The two commands a newcomer needs: `make test` and `make demo`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: deps test lint demo demo-down bench e2e-upstream e2e-helm chaos clean-leftovers

deps:
	bash hack/install-deps.sh

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -m "not chaos" $(PYTEST_ARGS)

# Faults under load (docs/RELIABILITY.md): OVN central, the master, the
# apiserver and each node's daemons killed while a Deployment scales up.
CHAOS_PODS ?= 60
chaos: deps
	OVNKUBE_CHAOS_PODS=$(CHAOS_PODS) $(PY) -m pytest -m chaos -s $(PYTEST_ARGS) tests/test_chaos_*.py

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

# Our e2e tests again, on a network the Helm chart installed (ovnkube-local
# up --cni none, then helm install) instead of the one `up` brings.
E2E_TESTS := tests/test_e2e_cluster.py tests/test_e2e_kubectl.py tests/test_e2e_services.py tests/test_e2e_netpol.py
e2e-helm: deps
	OVNKUBE_E2E_NETWORK=helm $(PY) -m pytest $(PYTEST_ARGS) $(E2E_TESTS)

bench: deps
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Removes processes and namespaces a killed test run may have left behind.
clean-leftovers:
	$(PY) -m localcluster.sweep
