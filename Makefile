# The two commands a newcomer needs: `make test` and `make demo`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: deps test lint demo demo-down bench clean-leftovers

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

bench: deps
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Removes processes and namespaces a killed test run may have left behind.
clean-leftovers:
	$(PY) -m localcluster.sweep
