# The two commands: `make all` (set up and run the default study, then its HTML report), `make test`
# (the whole suite); and the quick loop while developing, `make test-fast`: every test not marked
# slow (those run Snakemake or check scale).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: all test test-fast venv lint clean

all: $(VENV)/.installed
	$(BIN)/snakemake --profile profiles/local --cores $(CORES) all
	$(BIN)/snakemake --report reports/report.html

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# On every core (pytest-xdist): 2 min 16 s on 2 cores, against 3 min 45 s in one process.
test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not slow" -n auto

venv: $(VENV)/.installed

# Re-install when the package's dependencies change.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# ruff: pyflakes, pycodestyle, import order and bugbear (pyproject.toml); snakemake: the rule files.
lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench workflow/scripts
	$(BIN)/snakemake --lint

clean:
	rm -rf results resources/weights resources/demo reports logs benchmarks .snakemake
