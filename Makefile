# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	rm -rf demo-ledger.db demo-ledger.db-wal demo-ledger.db-shm demo-ledger-keys
	$(BIN)/trial-ledger --db demo-ledger.db demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# ruff and mypy, configured in pyproject.toml; CI runs this before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# Heavy measurements, never part of `make test`. BENCH_ARGS='--sizes 10000' for a quick run.
bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo-ledger.db* .pytest_cache
