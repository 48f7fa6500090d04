"""Which capacity slots are expired or leaked: Trinity's slot rules, in one place.

From Trinity's ``slot_service`` and ``cleanup_service`` (read late 2026):

- a slot's lifetime (its TTL) is its hash's ``timeout_seconds`` + 300 s; without a hash, the agent's
  ``agent_ownership.execution_timeout_seconds`` + 300 s; for an agent without that row, 1,200 s;
- a slot is **expired** when now - score > its TTL (the score is the acquire time, epoch seconds);
- a slot is **leaked** when its row is missing or ``success``/``failed``/``cancelled``/``skipped``
  (never ``queued`` or ``pending_retry``) and it was acquired at least 15 s ago (a slot ZADDed a
  moment before its row is inserted is not a leak);
- members named ``drain-…`` are the capacity manager's placeholders: never touched;
- while the Redis key ``governor:pause`` exists, the whole slot phase is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from exec_watchdog.platform_access.schema import (
    DEFAULT_TIMEOUT_SECONDS,
    TERMINAL_STATUSES,
    agent_ownership,
    schedule_executions,
)

SLOT_TTL_MARGIN_SECONDS = 300  # Trinity's SLOT_TTL_BUFFER
UNKNOWN_AGENT_TTL_SECONDS = 1200  # no hash and no agent_ownership row
LEAK_GRACE_SECONDS = 15.0  # Trinity's SLOT_RECOVERY_GRACE_SECONDS
DRAIN_PREFIX = "drain-"
GOVERNOR_PAUSE_KEY = "governor:pause"
MISSING = "missing"  # the leaked status of a slot whose row does not exist


@dataclass(frozen=True, slots=True)
class SlotEntry:
    """One slot as the store holds it."""

    agent: str
    execution_id: str
    acquired_at: float  # the sorted set's score: epoch seconds
    timeout_seconds: int | None  # from the slot's hash; None when the hash is gone (expired) or unreadable

    def age_seconds(self, now: float) -> float:
        return now - self.acquired_at


@dataclass(frozen=True, slots=True)
class SlotRow:
    """What a slot's row says, for the slot rules: its status and whether it is a lease row."""

    status: str
    leased: bool


def is_placeholder(execution_id: str) -> bool:
    return execution_id.startswith(DRAIN_PREFIX)


def ttl_seconds(entry: SlotEntry, agent_timeouts: Mapping[str, int]) -> float:
    """Trinity's slot lifetime: hash timeout + 300, else the agent's timeout + 300, else 1,200 s."""
    if entry.timeout_seconds is not None:
        return entry.timeout_seconds + SLOT_TTL_MARGIN_SECONDS
    if entry.agent in agent_timeouts:
        return agent_timeouts[entry.agent] + SLOT_TTL_MARGIN_SECONDS
    return UNKNOWN_AGENT_TTL_SECONDS


def is_expired(entry: SlotEntry, agent_timeouts: Mapping[str, int], now: float) -> bool:
    return entry.age_seconds(now) > ttl_seconds(entry, agent_timeouts)


def leaked_status(row: SlotRow | None) -> str | None:
    """``missing`` or the terminal status when the slot's row makes it a leak; None otherwise."""
    if row is None:
        return MISSING
    return row.status if row.status in TERMINAL_STATUSES else None


def is_leaked(entry: SlotEntry, row: SlotRow | None, now: float) -> bool:
    return leaked_status(row) is not None and entry.age_seconds(now) >= LEAK_GRACE_SECONDS


def agent_timeouts(conn: sa.Connection, names: Iterable[str] | None = None) -> dict[str, int]:
    """Each ``agent_ownership`` row's execution timeout (3,600 s when NULL or not a positive integer)."""
    out: dict[str, int] = {}
    query = sa.select(agent_ownership.c.agent_name, agent_ownership.c.execution_timeout_seconds)
    if names is not None:
        query = query.where(agent_ownership.c.agent_name.in_(sorted(set(names))))
    for name, timeout in conn.execute(query):
        if isinstance(name, str):
            ok = isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 0
            out[name] = timeout if ok else DEFAULT_TIMEOUT_SECONDS
    return out


def slot_rows(conn: sa.Connection, execution_ids: Iterable[str]) -> dict[str, SlotRow]:
    """The rows of these slots' executions (absent ids have no row), in chunks of 500."""
    ids = sorted(set(execution_ids))
    table = schedule_executions
    found: dict[str, SlotRow] = {}
    for start in range(0, len(ids), 500):
        query = sa.select(table.c.id, table.c.status, table.c.lease_expires_at).where(
            table.c.id.in_(ids[start:start + 500]))
        for execution_id, status, lease in conn.execute(query):
            found[str(execution_id)] = SlotRow(str(status), lease is not None)
    return found
