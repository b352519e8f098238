# The farm's two commands: `make run` (set up and start everything) and `make test` (set up and test).
SHELL := /bin/bash
export XTTS_MODEL ?= xtts_v2
export PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: run test setup bench devmodel migrate clean

setup:
	scripts/system_deps.sh
	scripts/venv.sh

run:
	scripts/run_farm.sh

test:
	scripts/test_env.sh
	scripts/venv.sh
	.venv/bin/python -m pytest $(PYTEST_ARGS)

bench: setup
	.venv/bin/python -m benchmarks.run $(BENCH_ARGS)

devmodel: setup
	.venv/bin/python -m workers.devmodel --out models/dev

migrate: setup
	.venv/bin/alembic upgrade head

clean:
	rm -rf .cache data models/dev .pytest_cache
