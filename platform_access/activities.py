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


def close_one(conn: sa.Connection, execution_id: str, status: str, error: str | None, now: datetime) -> str | None:
    """Close the execution's dispatch activity for a terminal ``status``; the id closed, or None."""
    state = state_for(status)
    open_first = sa.case((table.c.activity_state == ACTIVITY_STARTED, 0), else_=1)
    row = conn.execute(sa.select(table.c.id, table.c.started_at)
                       .where(_dispatch_of(execution_id), _closable(state))
                       .order_by(open_first, table.c.created_at.desc()).limit(1)).first()
    if row is None:
        return None
    won = conn.execute(sa.update(table).where(table.c.id == row.id, _closable(state))
                       .values(activity_state=state, completed_at=format_utc(now),
                               duration_ms=_measured(row.started_at, now), error=error))
    return str(row.id) if won.rowcount == 1 else None


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
