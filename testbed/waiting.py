"""Waiting in tests: for a condition, never for a fixed time.

A test that must show something does NOT happen waits for a positive event proving the period
that matters has passed (:func:`holds_until`), not for a number of seconds.
"""

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


def holds_until(check: Callable[[], bool], until: Callable[[], T], timeout: float, what: str, until_what: str,
                interval: float = 0.2) -> T:
    """Assert ``check`` stays true until ``until`` returns something truthy (returned), which must
    happen within ``timeout`` s. ``check`` is asserted once more after ``until`` held."""
    deadline = time.monotonic() + timeout
    while True:
        assert check(), f"stopped holding: {what}"
        reached = until()
        if reached:
            assert check(), f"stopped holding: {what}"
            return reached
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:g} s still not: {until_what} (while {what})")
        time.sleep(interval)
