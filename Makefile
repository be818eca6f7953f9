# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench scaling fuzz lint clean

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
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# How cost grows (docs/scaling.md), from bench/results.json plus its own runs; after `make bench`.
scaling: $(STAMP)
	$(BIN)/python -m bench.scaling $(SCALING_ARGS)

# Fuzzing at full volume (minutes, not hours): the fuzz tests of `make test`, with their full counts.
FUZZ_TESTS := tests/test_tamper_fuzz.py tests/test_tamper_fuzz_pg.py tests/test_hostile.py tests/test_witness_fuzz.py \
              tests/test_verified_fuzz.py tests/test_incremental_book.py
fuzz: $(STAMP)
	TRIAL_LEDGER_FUZZ=1 $(BIN)/python -m pytest -q -p no:cacheprovider $(FUZZ_TESTS)

clean:
	rm -rf $(VENV) demo-ledger.db* .pytest_cache
