"""A breaker that stops a runaway batch: too many remediations in a window stops all acting.

It counts changes made: budget is taken before acting and given back (:meth:`refund`) when the
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
        self._actions: deque[float] = deque()
        self._tripped_until = 0.0

    def _expire(self, now: float) -> None:
        while self._actions and self._actions[0] <= now - self.window_seconds:
            self._actions.popleft()

    @property
    def is_open(self) -> bool:
        now = self._clock()
        if self._tripped_until and now >= self._tripped_until:
            self._tripped_until = 0.0
            self._actions.clear()
        return self._tripped_until > now

    def allow(self) -> bool:
        """Take one action's worth of budget; False (and trip) when the window is full."""
        if self.is_open:
            return False
        now = self._clock()
        self._expire(now)
        if len(self._actions) >= self.max_actions:
            self._tripped_until = now + self.window_seconds
            return False
        self._actions.append(now)
        return True

    def refund(self) -> None:
        """Give back the budget of one action that changed nothing."""
        if self._actions:
            self._actions.pop()

    def reset(self) -> None:
        self._actions.clear()
        self._tripped_until = 0.0
