#!/usr/bin/env bash
# A newcomer's path, checked: build the environment from uv.lock alone into an empty folder, then
# run the CLI and type-check the project with it. A missing pin (an import that only works because
# the developer's .venv happens to have the package) or a stale lock fails here.
# Usage: scripts/newcomer-check.sh [path-to-uv]
set -euo pipefail
cd "$(dirname "$0")/.."
uv="${1:-uv}"
env_dir="$(mktemp -d -t exec-watchdog-newcomer.XXXXXX)"
trap 'rm -rf "$env_dir"' EXIT

echo "newcomer-check: installing from uv.lock into $env_dir" >&2
UV_PROJECT_ENVIRONMENT="$env_dir" "$uv" sync --locked --extra test --quiet
"$env_dir/bin/exec-watchdog" --help >/dev/null
echo "newcomer-check: exec-watchdog --help ran" >&2
# A cache of its own, so nothing the developer's runs left behind can hide an error.
"$env_dir/bin/mypy" --cache-dir "$env_dir/.mypy_cache"
echo "newcomer-check: mypy clean on the locked environment" >&2
