"""A breaker that stops a runaway batch: too many remediations in a window stops all acting.

It counts changes made: budget is taken before acting and given back (:meth:`settle`) when the
attempt changed nothing (a duplicate, a lost race, a terminate that failed).

It resumes on its own when the window has passed, or when an operator resets it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class Breaker:
    def __init__(self, max_actions: int, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_actions < 1 or window_seconds <= 0:
            raise ValueError("breaker needs max_actions >= 1 and a positive window")
        self.max_actions = max_actions
        self.window_seconds = window_seconds
        self._clock = clock
        self._actions: deque[tuple[float, str]] = deque()  # (when, execution id)
        self._holders: dict[str, int] = {}  # attempts in flight per execution id
        self._changed: set[str] = set()
        self._tripped_until = 0.0

    def _expire(self, now: float) -> None:
        while self._actions and self._actions[0][0] <= now - self.window_seconds:
            self._actions.popleft()

    @property
    def is_open(self) -> bool:
        now = self._clock()
        if self._tripped_until and now >= self._tripped_until:
            self._tripped_until = 0.0
            self._actions.clear()
        return self._tripped_until > now

    def allow(self, key: str = "") -> bool:
        """Take one action's worth of budget for ``key`` (an execution id); False (and trip) when
        the window is full. Attempts on a key that already holds budget share it: duplicates can
        make at most one change between them."""
        if key and key in self._holders:
            self._holders[key] += 1
            return True
        if self.is_open:
            return False
        now = self._clock()
        self._expire(now)
        if len(self._actions) >= self.max_actions:
            self._tripped_until = now + self.window_seconds
            return False
        self._actions.append((now, key))
        if key:
            self._holders[key] = 1
        return True

    def settle(self, key: str, changed: bool) -> None:
        """One attempt on ``key`` is over. When the last one ends and none changed anything, the
        budget goes back: a duplicate, a lost race or a failed terminate is not a remediation."""
        if changed:
            self._changed.add(key)
        left = self._holders.get(key, 0) - 1
        if left > 0:
            self._holders[key] = left
            return
        self._holders.pop(key, None)
        if key in self._changed:
            self._changed.discard(key)
            return
        for index in range(len(self._actions) - 1, -1, -1):
            if self._actions[index][1] == key:
                del self._actions[index]
                break

    def reset(self) -> None:
        self._actions.clear()
        self._tripped_until = 0.0
