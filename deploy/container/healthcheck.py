"""Container health check: exit 0 when this container's exec-watchdog answers ``GET /healthz``.

One image runs both the exporter and the remediator, so the port comes from the same variable
the command reads, ``EXEC_WATCHDOG_LISTEN`` (``0.0.0.0:9464`` is asked at ``127.0.0.1:9464``).
``EXEC_WATCHDOG_HEALTH_URL`` overrides it; with neither set, the two default ports are tried.
Standard library only: it runs with the image's Python and nothing else.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

DEFAULT_PORTS = (9464, 9463)  # remediator, exporter
TIMEOUT_SECONDS = 3.0


def health_urls(environ: Mapping[str, str]) -> list[str]:
    """The URLs to ask, in order; the first that answers 200 makes the container healthy."""
    explicit = environ.get("EXEC_WATCHDOG_HEALTH_URL", "").strip()
    if explicit:
        return [explicit]
    host, sep, port = environ.get("EXEC_WATCHDOG_LISTEN", "").strip().rpartition(":")
    if not sep or not port.isdigit():
        return [f"http://127.0.0.1:{p}/healthz" for p in DEFAULT_PORTS]
    host = host.removeprefix("[").removesuffix("]")
    # A wildcard bind is reached on loopback from inside the container.
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return [f"http://{host}:{port}/healthz"]


def healthy(url: str, timeout: float = TIMEOUT_SECONDS) -> bool:
    # No proxies: HTTP_PROXY in the container's environment must not capture a loopback check.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main() -> int:
    urls = health_urls(os.environ)
    if any(healthy(url) for url in urls):
        return 0
    print(f"unhealthy: no 200 from {', '.join(urls)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
