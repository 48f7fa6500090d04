"""The capacity slots a scrape publishes: only those that can fire.

One read of the slot store (every member with its score and its hash's ``timeout_seconds``, in two
pipelined round trips on Redis), one read of their rows (``IN`` chunks of 500, skipping the rows
the scrape already read as running) and of the agents' timeouts. A slot is published when it can
fire: past ``PUBLISH_SHARE`` of its TTL (the expiry rule compares age and TTL), or leaked (its row
missing or finished: the leak rule waits out the 15 s grace). A healthy young slot is never a
series, so 3,000 slots cost a few series, not 9,000.

Execution ids as labels are bounded the same way as the running executions': only slots that are
held, and of those only the ones above.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from exec_watchdog.exporter.snapshot import SlotFacts
from exec_watchdog.platform_access import slot_expiry
from exec_watchdog.platform_access.slot_expiry import SlotEntry, SlotRow
from exec_watchdog.platform_access.slots import SlotStore

PUBLISH_SHARE = 0.8  # a slot past 80 % of its TTL is published: the rules only need it from expiry on


@dataclass(frozen=True, slots=True)
class SlotRead:
    used: dict[str, int]
    facts: tuple[SlotFacts, ...]
    paused: bool


def read_slots(store: SlotStore, engine: sa.Engine, running_ids: Collection[str], now: float,
               owns: Callable[[str], bool] | None = None) -> SlotRead:
    """Counts per agent, the slots that can fire, and whether the slot phase is paused."""
    used = store.used_by_agent()
    entries = [e for e in store.entries() if owns is None or owns(e.agent)]
    paused = store.paused()
    asked = [e.execution_id for e in entries if e.execution_id not in running_ids]
    with engine.connect() as conn:
        timeouts = slot_expiry.agent_timeouts(conn)
        rows = slot_expiry.slot_rows(conn, asked) if asked else {}
    running = SlotRow("running", False)
    for execution_id in running_ids:
        rows.setdefault(execution_id, running)
    if owns is not None:
        used = {a: n for a, n in used.items() if owns(a)}
    return SlotRead(used, publishable(entries, rows, timeouts, now), paused)


def publishable(entries: list[SlotEntry], rows: Mapping[str, SlotRow], timeouts: Mapping[str, int],
                now: float) -> tuple[SlotFacts, ...]:
    out = []
    for entry in entries:
        ttl = slot_expiry.ttl_seconds(entry, timeouts)
        age = entry.age_seconds(now)
        leaked = slot_expiry.leaked_status(rows.get(entry.execution_id)) is not None
        if leaked or age >= PUBLISH_SHARE * ttl:
            out.append(SlotFacts(entry.agent, entry.execution_id, age, ttl, leaked))
    return tuple(out)
