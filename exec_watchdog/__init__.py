"""exec-watchdog: find executions an agent platform lost track of and recover them safely."""

from __future__ import annotations

from exec_watchdog.common.version import __version__

__all__ = ["__version__"]
