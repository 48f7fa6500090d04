#!/usr/bin/env bash
# Installs the Debian packages exec-watchdog runs against, when they are missing.
# Root installs them; anyone else is told the one command to run.
set -euo pipefail

need=()
command -v prometheus    >/dev/null || need+=(prometheus)
command -v promtool      >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v amtool        >/dev/null || need+=(prometheus-alertmanager)
command -v redis-server  >/dev/null || need+=(redis-server)
[ -n "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null)" ] || command -v initdb >/dev/null || need+=(postgresql)
if [ "${EXEC_WATCHDOG_BROWSER_TESTS:-1}" = 1 ]; then
  command -v chromium >/dev/null || need+=(chromium)
  command -v npm      >/dev/null || need+=(npm)  # axe-core for the accessibility check (scripts/test-assets.sh)
fi
[ ${#need[@]} -eq 0 ] && exit 0

mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
cmd="apt-get install -y --no-install-recommends ${need[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "exec-watchdog needs these Debian packages: ${need[*]}" >&2
  echo "Install them with:  sudo apt-get update && sudo $cmd" >&2
  exit 1
fi
echo "Installing Debian packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
$cmd >/dev/null
# Debian's packages start services listening on every interface; we run our own on loopback.
for svc in prometheus prometheus-alertmanager redis-server postgresql; do
  if command -v systemctl >/dev/null && systemctl is-active -q "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
