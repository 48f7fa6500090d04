# Two commands do all the set-up on a fresh machine:
#   make run    the whole pipeline on the embedded default (SQLite, simulated agents,
#               real Prometheus and Alertmanager as child processes)
#   make test   every test, against real servers
# Both install the Python packages from uv.lock (exact versions, with hashes) into .venv.
# Maintainers: `make upgrade` re-resolves to the newest releases and runs the whole check.
PYTHON     ?= python3
UV_VERSION := 0.13.8
VENV       := .venv
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.installed
# uv itself, pinned, in a folder of its own (a fresh machine has only python3 and pip).
UV_HOME    := .uv
UV         := $(UV_HOME)/bin/uv
# Never let uv fetch an interpreter: the project runs on the machine's Python 3.11 (.python-version).
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)

.PHONY: run test check lint typecheck deps lock lock-check upgrade newcomer-check system-deps bench clean

run: $(STAMP) system-deps
	$(BIN)/exec-watchdog --log-format console demo $(ARGS)

test: $(STAMP) system-deps check

check: lock-check
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

$(UV):
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)

# The lock must describe pyproject.toml as it is; a stale one stops here, saying how to refresh it.
lock-check: $(UV)
	@$(UV) lock --check --quiet 2>/dev/null || { \
	  echo "uv.lock does not match pyproject.toml (a dependency was added, removed or re-bounded)." >&2; \
	  echo "Refresh it with 'make lock' (keeps every other pin) or 'make upgrade' (newest releases)," >&2; \
	  echo "then commit uv.lock." >&2; exit 1; }

$(STAMP): pyproject.toml uv.lock | lock-check
	$(UV) sync --locked --extra test
	touch $(STAMP)

# Re-resolve only what pyproject.toml's change needs.
lock: $(UV)
	$(UV) lock

# Newest releases within pyproject.toml's bounds, then the whole check on them.
upgrade: $(UV)
	$(UV) lock --upgrade
	$(UV) sync --locked --extra test
	touch $(STAMP)
	$(MAKE) system-deps check

# A newcomer's path: the environment built from the lock alone in an empty folder runs the CLI
# and type-checks the project (a missing or stale pin fails here, not on a user's machine).
newcomer-check: $(UV)
	@bash scripts/newcomer-check.sh $(UV)

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
	rm -rf $(VENV) $(UV_HOME) .mypy_cache .ruff_cache .pytest_cache
