# The two commands a new machine needs: `make demo` and `make test` (README.md).
.PHONY: setup demo test unit integration soak check lint typecheck bench clean down

VENV := .venv
PULSE := $(VENV)/bin/pulse
PYTEST := $(VENV)/bin/pytest
# Two pytest-xdist workers, each taking whole test modules as it frees up, longest first (tests/conftest.py).
WORKERS ?= 2

setup:
	@bash infra/setup.sh

## Start local services and show a synthetic stream arriving (Ctrl-C stops; `make down` stops services).
demo: setup
	$(PULSE) demo

## Everything CI runs: unit, contract, doctests and integration tests against real services.
test: setup
	$(PYTEST) -n $(WORKERS) --dist loadscope --no-loadscope-reorder --durations=10

unit: setup
	$(PYTEST) -m "not integration"

integration: setup
	$(PYTEST) -n $(WORKERS) --dist loadscope --no-loadscope-reorder -m integration

## The fault replay at soak size (200,000 events; ~15-20 min on 2 cores).
soak: setup
	PULSE_RELIABILITY_EVENTS=200000 PULSE_RELIABILITY_RATE=400 $(PYTEST) -s tests/reliability/test_faults.py

lint: setup
	$(VENV)/bin/ruff check .

typecheck: setup
	$(VENV)/bin/mypy online_models serving schemas

check: lint typecheck unit

## Opt-in benchmarks (they print figures; nothing here is timed in tests).
bench: setup
	$(VENV)/bin/python bench/produce.py

down:
	$(PULSE) down

clean: down
	rm -rf .local/kafka .local/redis .local/flink .local/logs .local/run
