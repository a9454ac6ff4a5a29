# Everything the project needs is installed from here: `make demo` (main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[cpu,dev]'
	touch $@

demo: setup
	$(BIN)/palm simulate --out out/simulate

lint: setup
	$(BIN)/ruff check palm_middleware tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: setup
	$(BIN)/python bench/bench_decision.py

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
