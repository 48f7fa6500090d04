"""Rows Trinity's cleanup service ends outside Phase 0: skipped rows never finalized (its Phase 1c)
and queued rows past the backlog age (its capacity maintenance). Read for the exporter, re-read
and written for the remediator, each write a compare-and-set on the status the path expects.

- Skipped: ``status = 'skipped' AND completed_at IS NULL``, any age → ``failed``,
  ``completed_at = COALESCE(started_at, now)``, ``duration_ms = 0``, the text.
- Backlog: ``status = 'queued'`` with ``queued_at`` older than 24 h → ``failed``,
  ``completed_at = now``, the text; ``duration_ms`` untouched. The guard also requires the
  ``queued_at`` that was verified, so a row re-queued meanwhile is not expired on its old age.

Neither path touches a row with ``lease_expires_at`` set (Trinity's lease reaper owns those).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from exec_watchdog.platform_access.schema import schedule_executions
from exec_watchdog.platform_access.timestamps import BadTimestamp, format_utc, parse_utc

BACKLOG_MAX_AGE_SECONDS = 24 * 3600  # Trinity: queued longer than 24 hours
t = schedule_executions


@dataclass(frozen=True, slots=True)
class CleanupRow:
    """A skipped row without ``completed_at``, or a queued row, as read (ages on the database's clock)."""

    execution_id: str
    agent_name: str
    schedule_id: str
    status: str
    age_seconds: float  # skipped: since started_at; queued: since queued_at
    completed: bool  # completed_at is set
    leased: bool
    queued_at: str | None  # as stored, for the backlog guard


def _age(value: object, now: datetime) -> float | None:
    try:
        return (now - parse_utc(value)).total_seconds()
    except BadTimestamp:
        return None


_COLUMNS = (t.c.id, t.c.agent_name, t.c.schedule_id, t.c.status, t.c.started_at, t.c.completed_at,
            t.c.queued_at, t.c.lease_expires_at)


def _row(r: Any, now: datetime) -> CleanupRow | None:
    stamp = r.queued_at if r.status == "queued" else r.started_at
    age = _age(stamp, now)
    if age is None or not isinstance(r.agent_name, str) or not r.agent_name:
        return None
    return CleanupRow(str(r.id), r.agent_name, str(r.schedule_id), str(r.status), age, r.completed_at is not None,
                      r.lease_expires_at is not None, r.queued_at if isinstance(r.queued_at, str) else None)


def pending_cleanup(conn: sa.Connection, now: datetime, queued_older_than_seconds: float) -> list[CleanupRow]:
    """Unleased skipped rows without ``completed_at``, and unleased queued rows queued longer than the bound
    (only those can fire; the rest of the queue is never published row by row)."""
    skipped = sa.and_(t.c.status == "skipped", t.c.completed_at.is_(None))
    rows = conn.execute(sa.select(*_COLUMNS).where(
        sa.or_(skipped, t.c.status == "queued"), t.c.lease_expires_at.is_(None)))
    out = []
    for r in rows:
        row = _row(r, now)
        if row is not None and (row.status == "skipped" or row.age_seconds > queued_older_than_seconds):
            out.append(row)
    return out


def get_row(conn: sa.Connection, execution_id: str, now: datetime) -> CleanupRow | None:
    r = conn.execute(sa.select(*_COLUMNS).where(t.c.id == execution_id)).first()
    return None if r is None else _row(r, now)


def finalize_skipped(conn: sa.Connection, execution_id: str, error: str, now: datetime) -> bool:
    """``skipped`` (no completed_at, no lease) → ``failed``. True when this call won."""
    result = conn.execute(
        sa.update(t).where(t.c.id == execution_id, t.c.status == "skipped", t.c.completed_at.is_(None),
                           t.c.lease_expires_at.is_(None))
        .values(status="failed", completed_at=sa.func.coalesce(t.c.started_at, format_utc(now)), duration_ms=0,
                error=error))
    return result.rowcount == 1


def expire_backlog(conn: sa.Connection, execution_id: str, queued_at: str, error: str, now: datetime) -> bool:
    """``queued`` (still queued at ``queued_at``, no lease) → ``failed``. True when this call won."""
    result = conn.execute(
        sa.update(t).where(t.c.id == execution_id, t.c.status == "queued", t.c.queued_at == queued_at,
                           t.c.lease_expires_at.is_(None))
        .values(status="failed", completed_at=format_utc(now), error=error))
    return result.rowcount == 1
