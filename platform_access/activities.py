"""Closing Trinity's activities (``agent_activities``), with Trinity's compare-and-set lattice.

An execution's activity is the dispatch row: ``related_execution_id = id AND activity_type IN
('chat_start', 'schedule_start')``. Trinity's lattice (its #1804): ``started < failed <
{completed, cancelled}``:

- a ``failed`` or ``cancelled`` close only moves ``started``;
- a ``completed`` close moves ``started`` or ``failed`` (a late success corrects a provisional
  failure), never another terminal state.

Two ways to close, as Trinity has them:

- :func:`close_one` — the per-row close of a recovery (Phase 0 watchdog, slot reclaim): the one
  row, still-``started`` first then the newest, with ``completed_at`` now and a measured
  ``duration_ms`` (``now - started_at``; NULL when the start is unreadable or the value
  overflows INTEGER);
- :func:`close_all_open` — the bulk close of a sweep (stale, no session): every open dispatch
  activity of the execution, ``duration_ms`` NULL (the sweep did not measure the end).

:func:`fail_stale` is Trinity's 120-minute backstop, one activity at a time, guarded on
``started`` and on the age measured on the database's clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from exec_watchdog.platform_access.schema import ACTIVITY_STARTED, DISPATCH_ACTIVITY_TYPES, agent_activities
from exec_watchdog.platform_access.timestamps import BadTimestamp, format_utc, parse_utc

PG_INTEGER_MAX = 2**31 - 1
STALE_ACTIVITY_MINUTES = 120  # Trinity's backstop: mark_stale_activities_failed(timeout_minutes=120)
_STATE_FOR_STATUS = {"success": "completed", "cancelled": "cancelled"}  # anything else: failed

table = agent_activities


def state_for(status: str) -> str:
    """The activity state a terminal execution status closes to (Trinity's activity_state_for_terminal)."""
    return _STATE_FOR_STATUS.get(status, "failed")


def _closable(state: str) -> sa.ColumnElement[bool]:
    if state == "completed":
        return table.c.activity_state.in_((ACTIVITY_STARTED, "failed"))
    return table.c.activity_state == ACTIVITY_STARTED


def _is_closable(state: str, current: str) -> bool:
    """:func:`_closable` on a row already read."""
    return current in (ACTIVITY_STARTED, "failed") if state == "completed" else current == ACTIVITY_STARTED


def _measured(started_at: object, now: datetime) -> int | None:
    try:
        started = parse_utc(started_at)
    except BadTimestamp:
        return None
    ms = max(0, int((now - started).total_seconds() * 1000))
    return None if ms > PG_INTEGER_MAX else ms


def _dispatch_of(execution_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(table.c.related_execution_id == execution_id,
                   table.c.activity_type.in_(DISPATCH_ACTIVITY_TYPES))


@dataclass(frozen=True, slots=True)
class Closable:
    """The dispatch activity a close picks for an execution."""

    id: str
    started_at: object


def closable_of(conn: sa.Connection, statuses: Mapping[str, str], chunk: int = 500) -> dict[str, Closable]:
    """For each execution (id -> terminal status), the activity :func:`close_one` closes: of its
    closable dispatch rows, still-``started`` first, then the newest. One read for many executions."""
    open_first = sa.case((table.c.activity_state == ACTIVITY_STARTED, 0), else_=1)
    ids, found = list(statuses), {}
    for start in range(0, len(ids), chunk):
        # Every state a close may move, in the order a single close picks in: the first row
        # closable for its execution's status is that execution's pick.
        rows = conn.execute(sa.select(table.c.id, table.c.started_at, table.c.activity_state,
                                      table.c.related_execution_id)
                            .where(table.c.related_execution_id.in_(ids[start:start + chunk]),
                                   table.c.activity_type.in_(DISPATCH_ACTIVITY_TYPES),
                                   table.c.activity_state.in_((ACTIVITY_STARTED, "failed")))
                            .order_by(open_first, table.c.created_at.desc()))
        for row in rows:
            execution_id = row.related_execution_id
            if execution_id not in found and _is_closable(state_for(statuses[execution_id]), row.activity_state):
                found[execution_id] = Closable(str(row.id), row.started_at)
    return found


def close_one(conn: sa.Connection, execution_id: str, status: str, error: str | None, now: datetime) -> str | None:
    """Close the execution's dispatch activity for a terminal ``status``; the id closed, or None."""
    return close_picked(conn, closable_of(conn, {execution_id: status}).get(execution_id), status, error, now)


def close_picked(conn: sa.Connection, picked: Closable | None, status: str, error: str | None,
                 now: datetime) -> str | None:
    """Close the activity :func:`closable_of` picked, guarded on its state still being closable."""
    if picked is None:
        return None
    state = state_for(status)
    won = conn.execute(_CLOSE_COMPLETED if state == "completed" else _CLOSE_ENDED,
                       {"activity_id": picked.id, "new_state": state, "closed_at": format_utc(now),
                        "closed_ms": _measured(picked.started_at, now), "close_error": error})
    return picked.id if won.rowcount == 1 else None


def _close_statement(state: str) -> sa.Update:
    return (sa.update(table).where(table.c.id == sa.bindparam("activity_id"), _closable(state))
            .values(activity_state=sa.bindparam("new_state"), completed_at=sa.bindparam("closed_at"),
                    duration_ms=sa.bindparam("closed_ms"), error=sa.bindparam("close_error")))


# Built once (a recovery of thousands closes thousands): one per guard of the lattice.
_CLOSE_COMPLETED = _close_statement("completed")
_CLOSE_ENDED = _close_statement("failed")  # failed or cancelled: both move only started


def close_all_open(conn: sa.Connection, execution_id: str, error: str, now: datetime) -> list[str]:
    """A sweep's close: every ``started`` dispatch activity of the execution to ``failed``, duration NULL."""
    ids = [str(i) for i in conn.execute(sa.select(table.c.id).where(
        _dispatch_of(execution_id), table.c.activity_state == ACTIVITY_STARTED)).scalars()]
    closed = []
    for activity_id in ids:
        won = conn.execute(sa.update(table).where(table.c.id == activity_id,
                                                  table.c.activity_state == ACTIVITY_STARTED)
                           .values(activity_state="failed", completed_at=format_utc(now), duration_ms=None,
                                   error=error))
        if won.rowcount == 1:
            closed.append(activity_id)
    return closed


@dataclass(frozen=True, slots=True)
class Activity:
    id: str
    agent_name: str
    activity_type: str
    state: str
    started_at: datetime | None  # None: unreadable (never aged, never failed by the backstop)
    related_execution_id: str | None


_COLUMNS = (table.c.id, table.c.agent_name, table.c.activity_type, table.c.activity_state, table.c.started_at,
            table.c.related_execution_id)


def _activity(row: Any) -> Activity:
    try:
        started: datetime | None = parse_utc(row.started_at)
    except BadTimestamp:
        started = None
    return Activity(str(row.id), str(row.agent_name or ""), str(row.activity_type or ""),
                    str(row.activity_state or ""), started, row.related_execution_id)


def get(conn: sa.Connection, activity_id: str) -> Activity | None:
    row = conn.execute(sa.select(*_COLUMNS).where(table.c.id == activity_id)).first()
    return None if row is None else _activity(row)


def started_activities(conn: sa.Connection, older_than: datetime) -> list[Activity]:
    """Every ``started`` activity whose start is before ``older_than`` (ISO text order, as Trinity compares).

    Trinity compares the stored text with a cutoff ``%Y-%m-%dT%H:%M:%S``; so does this query, and
    each row's age is then re-read from its parsed timestamp.
    """
    cutoff = older_than.strftime("%Y-%m-%dT%H:%M:%S")
    return [_activity(r) for r in conn.execute(sa.select(*_COLUMNS).where(
        table.c.activity_state == ACTIVITY_STARTED, table.c.started_at < cutoff))]


def fail_stale(conn: sa.Connection, activity_id: str, error: str, now: datetime,
               older_than_seconds: float = STALE_ACTIVITY_MINUTES * 60) -> bool:
    """``started -> failed`` for an activity started more than ``older_than_seconds`` ago. True when this call won."""
    activity = get(conn, activity_id)
    if activity is None or activity.started_at is None or activity.state != ACTIVITY_STARTED:
        return False
    if now - activity.started_at <= timedelta(seconds=older_than_seconds):
        return False
    won = conn.execute(sa.update(table).where(table.c.id == activity_id, table.c.activity_state == ACTIVITY_STARTED)
                       .values(activity_state="failed", completed_at=format_utc(now), duration_ms=None,
                               error=error))
    return won.rowcount == 1
