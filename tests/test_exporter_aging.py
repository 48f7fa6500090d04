"""exporter/aging.py: entries leave exactly when the window passes them, whatever order the batches come in."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from exec_watchdog.exporter.aging import Aging

_batches = st.lists(st.lists(st.tuples(st.integers(0, 50).map(float), st.sampled_from("abc")), max_size=12),
                    max_size=12)


@settings(max_examples=200, deadline=None)
@given(_batches, st.lists(st.integers(-5, 60).map(float), max_size=12))
def test_expire_hands_back_every_entry_at_or_before_the_cutoff_once(batches: list[list[tuple[float, str]]],
                                                                   cutoffs: list[float]) -> None:
    aging: Aging[str] = Aging()
    live: list[tuple[float, str]] = []
    for index, batch in enumerate(batches):
        aging.add(batch)
        live += batch
        cutoff = cutoffs[index] if index < len(cutoffs) else -1.0
        expected = Counter(k for t, k in live if t <= cutoff)
        assert Counter(aging.expire(cutoff)) == expected
        live = [(t, k) for t, k in live if t > cutoff]
        assert len(aging) == len(live)
    assert Counter(aging.expire(1e9)) == Counter(k for _, k in live)
    assert len(aging) == 0
