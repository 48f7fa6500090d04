"""Waiting without fixed sleeps: until something holds, or while it must keep holding."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Call ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:g} s still not: {what} (last: {last!r})")
        time.sleep(interval)


def holds(check: Callable[[], bool], seconds: float, what: str, interval: float = 0.2) -> None:
    """Assert ``check`` stays true for ``seconds`` (for things that must NOT happen meanwhile)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), f"stopped holding: {what}"
        time.sleep(interval)
