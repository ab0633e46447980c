VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test check fmt bench

setup:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -c constraints.txt -e '.[test,plots,lightning,hf,trackers,optuna]'

run:
	$(VENV)/bin/sgdwalk run

test:
	$(PY) -m pytest

check:
	$(VENV)/bin/ruff check engine tui tests
	$(VENV)/bin/ruff format --check engine tui tests
	mkdir -p build/typecheck && ln -sfn ../../engine build/typecheck/sgdwalk
	$(VENV)/bin/mypy

fmt:
	$(VENV)/bin/ruff format engine tui tests
	$(VENV)/bin/ruff check --fix engine tui tests

bench:
	$(VENV)/bin/sgdwalk bench
	$(VENV)/bin/sgdwalk bench --model cnn --dataset synthetic-cifar10
