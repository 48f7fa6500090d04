"""Entries that leave a time window: the runs still inside the advice window, by completion time.

The run history counts each run once, when it is read; a run inside the window is also kept here
with its completion time, and handed back once the window has passed it, so the exporter can count
it as "completed before the window". Entries come in batches (one per read): each batch is sorted
and kept as a run of parallel arrays; neighbouring runs are merged while the older one is at most
twice the size of the newer (as in a merge sort), so there are O(log n) runs and each entry is
moved O(log n) times. Expiry is a binary search per run. 16 bytes per entry plus the shared key
objects: 100,000 runs in a 7-day window cost under 2 MB.
"""

from __future__ import annotations

import bisect
import heapq
from array import array
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class _Run(Generic[K]):
    times: array[float]
    keys: list[K]
    start: int = 0  # entries before this index have expired

    def __len__(self) -> int:
        return len(self.times) - self.start


@dataclass(slots=True)
class Aging(Generic[K]):
    """(time, key) entries that :meth:`expire` hands back once their time is at or before a cutoff."""

    _runs: list[_Run[K]] = field(default_factory=list)
    _interned: dict[K, K] = field(default_factory=dict)  # one key object per distinct key

    def __len__(self) -> int:
        return sum(len(run) for run in self._runs)

    def add(self, entries: Iterable[tuple[float, K]]) -> None:
        batch = sorted(entries, key=lambda entry: entry[0])
        if not batch:
            return
        intern = self._interned.setdefault
        self._runs.append(_Run(array("d", (t for t, _ in batch)), [intern(k, k) for _, k in batch]))
        while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            newer, older = self._runs.pop(), self._runs.pop()
            self._runs.append(_merge(older, newer))

    def expire(self, cutoff: float) -> list[K]:
        """Remove and return the keys of every entry whose time is at or before ``cutoff``."""
        out: list[K] = []
        for run in self._runs:
            end = bisect.bisect_right(run.times, cutoff, run.start)
            out.extend(run.keys[run.start:end])
            run.start = end
            if run.start > len(run.times) // 2:  # compact: expired entries never outweigh live ones
                run.times, run.keys, run.start = run.times[run.start:], run.keys[run.start:], 0
        self._runs = [run for run in self._runs if len(run)]
        if not self._runs:
            self._interned.clear()
        return out


def _merge(older: _Run[K], newer: _Run[K]) -> _Run[K]:
    merged = heapq.merge(zip(older.times[older.start:], older.keys[older.start:], strict=True),
                         zip(newer.times[newer.start:], newer.keys[newer.start:], strict=True),
                         key=lambda entry: entry[0])
    times: array[float] = array("d")
    keys: list[K] = []
    for t, k in merged:
        times.append(t)
        keys.append(k)
    return _Run(times, keys)
