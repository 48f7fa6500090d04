"""exec-watchdog: find executions an agent platform lost track of and recover them safely."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("exec-watchdog")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
