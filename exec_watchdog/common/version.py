"""The installed distribution's version, for --version and the build_info metric."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("exec-watchdog")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
