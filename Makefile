# Two commands do all the set-up on a fresh machine:
#   make run    the whole pipeline on the embedded default (SQLite, simulated agents,
#               real Prometheus and Alertmanager as child processes)
#   make test   every test, against real servers
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck check deps system-deps bench clean

run: $(STAMP) system-deps
	$(BIN)/exec-watchdog --log-format console demo $(ARGS)

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/lint-imports

deps: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# Debian packages the real-server tests and the demo use. Installed when missing and we are root;
# otherwise the script prints the exact apt-get line to run.
system-deps:
	@bash scripts/system-deps.sh

# Benchmarks print figures and their ratio to the issue's baseline (not timed tests).
bench: $(STAMP) system-deps
	$(BIN)/python bench/bench_exporter.py
	$(BIN)/python bench/bench_history.py
	$(BIN)/python bench/bench_remediator.py
	$(BIN)/python bench/bench_inflight.py
	$(BIN)/python bench/bench_recovery.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
