#!/usr/bin/env bash
# Browser-test assets from the npm registry, pinned, into a git-ignored cache folder:
#   axe-core — the accessibility checker tests/test_console_page.py injects into the live page (the
#   page itself never loads it).
# Usage: bash scripts/test-assets.sh [DIR]   (default .cache/test-assets; prints the axe.min.js path)
# Idempotent: a second run with the file in place does nothing. Needs node's npm (Debian: npm).
set -euo pipefail

AXE_VERSION=4.14.1
dir=${1:-"$(cd "$(dirname "$0")/.." && pwd)/.cache/test-assets"}
axe="$dir/node_modules/axe-core/axe.min.js"

if [[ -f "$axe" ]] && grep -q "\"version\": \"$AXE_VERSION\"" "$dir/node_modules/axe-core/package.json" 2>/dev/null; then
  echo "$axe"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "test-assets: npm is missing; install it (Debian: apt-get install --no-install-recommends npm)" >&2
  exit 1
fi
mkdir -p "$dir"
# --prefix keeps it in $dir; no package.json or lock is written into the repository.
npm install --silent --no-audit --no-fund --no-save --prefix "$dir" "axe-core@$AXE_VERSION" >&2
[[ -f "$axe" ]] || { echo "test-assets: npm ran but $axe is missing" >&2; exit 1; }
echo "$axe"
