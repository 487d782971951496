# medcls: `make demo` and `make test` are all a new user needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow lint format zoo-check clean

# (re)install when the dependency list changes
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/medcls demo

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check medcls tests benchmarks
	$(BIN)/ruff format --check medcls tests benchmarks

format: install
	$(BIN)/ruff format medcls tests benchmarks
	$(BIN)/ruff check --fix medcls tests benchmarks

clean:
	rm -rf runs .pytest_cache .ruff_cache
