# The farm's two commands: `make run` (set up and start everything) and `make test` (set up and test).
SHELL := /bin/bash
export XTTS_MODEL ?= xtts_v2
export PORT ?= 8000
PYTEST_ARGS ?=
# Python's bytecode cache on, whatever the shell says: without it every process of a farm compiles the project's
# modules again and pytest rewrites the asserts of every test module at each run (5 of the fast tier's 60 s).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: run test test-fast lint setup bench devmodel migrate clean gpu-wheels

setup:
	scripts/system_deps.sh
	scripts/venv.sh

run:
	scripts/run_farm.sh

test:
	scripts/test_env.sh
	scripts/venv.sh
	$(MAKE) --no-print-directory lint
	.venv/bin/python -m pytest $(PYTEST_ARGS)

# The fast subset: every test whose fixtures start no farm process (no Celery worker, no API) and load no model in
# process, less the `slow` ones that run a whole program (the rehearsal of scripts/gpu_check.sh, a worker's start-up
# checks). The `model` tests (the scheduler, the decoder, the GPT batch on the dev checkpoint) run with
# `.venv/bin/python -m pytest -m model`, and in `make test`.
test-fast:
	scripts/test_env.sh
	scripts/venv.sh
	.venv/bin/python -m pytest -m "not farm and not slow and not model" $(PYTEST_ARGS)

# ruff (lint and format) and mypy, configured in pyproject.toml.
lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

bench: setup
	.venv/bin/python -m benchmarks.run $(BENCH_ARGS)

# The cp312 manylinux wheels a bare GPU machine lacks, into gpu-wheels/ (ignored; under 64 MiB): see README,
# "On a GPU machine", and scripts/gpu_check.sh.
gpu-wheels:
	scripts/gpu_wheels.sh

devmodel: setup
	.venv/bin/python -m workers.devmodel --out models/dev

migrate: setup
	.venv/bin/alembic upgrade head

clean:
	rm -rf .cache data models/dev .pytest_cache
