# Fresh machine: `make demo` installs into .venv and runs the whole pipeline; `make test` runs the tests.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install demo test test-slow lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e ".[train,dev]"
	touch $@

demo: install
	$(BIN)/compressor demo --out runs/demo --force

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q --run-slow -m slow

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: install
	$(BIN)/python bench/sweep.py bench/sweeps/sst2.yaml

clean:
	rm -rf runs .pytest_cache
