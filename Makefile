# medcls: `make demo` and `make test` are all a new user needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install browser demo test test-slow lint format zoo-check clean

# (re)install when the dependency list changes
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium renders the HTML report in the report tests (Debian's package).
# Installed when missing and this user may (root, or passwordless sudo); otherwise
# those tests are skipped with a message saying how to install it.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	  echo "note: Chromium is missing and cannot be installed without root; the report-rendering tests will be skipped (apt-get install -y chromium)"; exit 0; fi; \
	  command -v apt-get >/dev/null 2>&1 || { echo "note: no apt-get; install Chromium to run the report-rendering tests"; exit 0; }; \
	  echo "installing Chromium (Debian package) for the report-rendering tests"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

demo: install
	$(BIN)/medcls demo

test: install browser
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check medcls tests benchmarks
	$(BIN)/ruff format --check medcls tests benchmarks

format: install
	$(BIN)/ruff format medcls tests benchmarks
	$(BIN)/ruff check --fix medcls tests benchmarks

# Zoo health sweep: builds, runs forward/backward and checks every listed model, appending
# to benchmarks/results/zoo_health.jsonl (resumes where it stopped) and rewriting docs/zoo.md.
# Hours on a CPU; not part of `make test`. E.g. make zoo-check ZOO_CHECK_ARGS="--jobs 4"
zoo-check: install
	$(BIN)/medcls models check $(ZOO_CHECK_ARGS)

clean:
	rm -rf runs .pytest_cache .ruff_cache
