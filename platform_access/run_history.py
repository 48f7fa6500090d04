"""Completed runs as the platform recorded them: the evidence a timeout should be set from.

Read-only. Both the exporter (incrementally, every scrape) and ``exec-watchdog advise`` (once,
straight from the database) read the table through these functions, so they see the same runs
with the same durations and the same "ended by the watchdog" verdicts.

* A completed run is a row whose status is final (``success``, ``failed``, ``cancelled``) and
  whose ``completed_at`` is set; lease rows count too (their run did complete).
* Its duration is ``duration_ms`` when the writer stored one, otherwise ``completed_at -
  started_at`` (Trinity's watchdog writes NULL on the runs it fails); a row with neither readable
  is skipped and counted.
* The watchdog's runs are recognised by the texts Trinity's watchdog writes (ours writes the same).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from exec_watchdog.platform_access import database
from exec_watchdog.platform_access.schema import MANUAL_SCHEDULE, agent_ownership, agent_schedules, schedule_executions
from exec_watchdog.platform_access.timestamps import BadTimestamp, parse_utc

FINAL_STATUSES = ("success", "failed", "cancelled")

# The `action` label of the runs the watchdog ended, named as Trinity's recovery announcements name
# them, and how each is recognised in the row.
ORPHAN_RECOVERED = "orphan_recovered"  # error: "... — recovered by watchdog[, no retained result]"
AUTO_TERMINATED = "auto_terminated"  # error: "Execution auto-terminated after N minutes by watchdog ..."
RESULT_RECOVERED = "result_recovered"  # response starts with the claim notice (a claimed success)
WATCHDOG_ACTIONS = (ORPHAN_RECOVERED, AUTO_TERMINATED, RESULT_RECOVERED)
# The texts are matched anywhere in `error`: the agent's /last-error prefix goes in front of them.
_ORPHAN_TEXT = "%— recovered by watchdog%"
_TERMINATED_TEXT = "%auto-terminated after % minutes by watchdog%"
# One line ahead of a claimed success's response, so readers know where it came from (written by the
# remediator's claim, recognised here).
RECOVERED_NOTICE = ("[Recovered by watchdog: this result was kept by the agent after the platform "
                    "lost track of the run]")
CLAIM_NOTICE_PREFIX = "[Recovered by watchdog"  # the first words of the notice on a claimed success

_t = schedule_executions.c
_WATCHDOG_ACTION = sa.case(
    (_t.error.like(_ORPHAN_TEXT), ORPHAN_RECOVERED),
    (_t.error.like(_TERMINATED_TEXT), AUTO_TERMINATED),
    (_t.response.like(CLAIM_NOTICE_PREFIX + "%"), RESULT_RECOVERED),
    else_=None,
)
_SELECT_COMPLETED = sa.select(
    _t.id, _t.agent_name, _t.schedule_id, _t.status, _t.started_at, _t.completed_at, _t.duration_ms,
    _WATCHDOG_ACTION.label("watchdog_action"),
).where(_t.completed_at.is_not(None))
# The status is checked in Python, not in SQL: Trinity's schema indexes `status` but not
# `completed_at`, and with `status IN (...)` SQLite walks that index over every final row (1.7x
# slower than the plain scan an incremental read needs anyway).


@dataclass(frozen=True, slots=True)
class CompletedRun:
    id: str
    agent: str
    schedule_id: str
    status: str
    duration_seconds: float
    completed_at: str  # as stored; compare times with completed_time(), never this text
    watchdog_action: str | None


@dataclass(frozen=True, slots=True)
class SkippedRow:
    """A completed row that cannot be used: no agent name, or no readable duration."""

    id: str
    completed_at: str


def completed_runs(conn: sa.Connection, *, completed_since: datetime | None = None,
                   batch: int = 20_000) -> Iterator[CompletedRun | SkippedRow]:
    """Every completed run, or at least those completed at or after ``completed_since``.

    With ``completed_since`` the query returns a superset (see :func:`completed_at_or_after`): callers
    compare :func:`completed_time` with it. Rows that cannot be used come as :class:`SkippedRow`, so
    callers can count them. Rows are streamed in batches (a server-side cursor on PostgreSQL), so a
    table of millions never sits in memory and no single fetch runs into the statement timeout.
    """
    query = _SELECT_COMPLETED
    if completed_since is not None:
        query = query.where(completed_at_or_after(completed_since))
    for row in conn.execution_options(yield_per=batch).execute(query):
        if row.status in FINAL_STATUSES:
            yield _completed_run(row)


def _completed_run(row: Any) -> CompletedRun | SkippedRow:
    agent = row.agent_name
    skipped = SkippedRow(str(row.id), str(row.completed_at))
    if not isinstance(agent, str) or not agent or not isinstance(row.completed_at, str):
        return skipped
    ms = row.duration_ms
    if isinstance(ms, int) and not isinstance(ms, bool) and ms >= 0:
        seconds = ms / 1000
    else:
        try:
            seconds = (parse_utc(row.completed_at) - parse_utc(row.started_at)).total_seconds()
        except BadTimestamp:
            return skipped
        if seconds < 0:
            return skipped
    return CompletedRun(str(row.id), agent, str(row.schedule_id), str(row.status), seconds,
                        row.completed_at, row.watchdog_action)


def schedule_timeouts(conn: sa.Connection) -> dict[tuple[str, str], int]:
    """The effective timeout of every schedule, and of every agent's manual runs (``__manual__``).

    Trinity's rule, as the overdue check applies it: COALESCE(schedule, agent, 3600), then a 0
    means 900 s. Keyed by (agent, schedule_id). Soft-deleted agents' schedules are left out.
    """
    out: dict[tuple[str, str], int] = {}
    rows = conn.execute(
        sa.select(agent_schedules.c.id, agent_schedules.c.agent_name, agent_schedules.c.timeout_seconds,
                  agent_ownership.c.execution_timeout_seconds)
        .select_from(agent_schedules.outerjoin(
            agent_ownership, agent_ownership.c.agent_name == agent_schedules.c.agent_name))
        .where(agent_ownership.c.deleted_at.is_(None)))  # soft-deleted agents: not the watchdog's business
    for schedule_id, agent, schedule_timeout, agent_timeout in rows:
        if isinstance(agent, str) and agent:
            out[(agent, str(schedule_id))] = database.effective_timeout(schedule_timeout, agent_timeout)
    agents = conn.execute(sa.select(agent_ownership.c.agent_name, agent_ownership.c.execution_timeout_seconds)
                          .where(agent_ownership.c.deleted_at.is_(None)))
    for agent, agent_timeout in agents:
        if isinstance(agent, str) and agent:
            out[(agent, MANUAL_SCHEDULE)] = database.effective_timeout(None, agent_timeout)
    return out


def deleted_agents(conn: sa.Connection) -> set[str]:
    """Soft-deleted agents (``agent_ownership.deleted_at`` set): their runs are not the watchdog's business.

    Their completed runs stay in the table (and in the exporter's totals, so an agent restored from
    deletion shows its whole history again); readers leave them out of what they publish and advise.
    """
    rows = conn.execute(sa.select(agent_ownership.c.agent_name).where(agent_ownership.c.deleted_at.is_not(None)))
    return {agent for (agent,) in rows if isinstance(agent, str)}


# -- comparing completion times --------------------------------------------------------------------
# `completed_at` is TEXT, written as `2026-12-01T10:00:00.123456Z` by Trinity and by us, but the
# parser (and older rows, and SQLite's datetime()) also know `2026-12-01 10:00:00`, naive or with
# an offset. As text, ' ' sorts before 'T': a plain `completed_at >= watermark` skips every
# space-separated row of the watermark's day. So the SQL asks for a superset that no accepted form
# can escape, with range conditions an index on completed_at can serve, and readers compare the
# parsed times in Python.
_NEGATIVE_OFFSETS = ("%-__:__", "%-____")  # a local time written behind UTC: its text reads earlier


def completed_at_or_after(moment: datetime) -> sa.ColumnElement[bool]:
    """Rows whose ``completed_at`` may be at or after ``moment``: every such row, and a few more.

    * ``T`` form at or after the moment's second (``...T10:00:00.5Z`` >= ``...T10:00:00``);
    * space form on the moment's day from its second on (later days sort after ``<day>T`` anyway);
    * a negative offset (``-05:00``): its wall-clock text reads up to a day earlier than UTC.
    """
    if moment.tzinfo is None:
        raise ValueError("refusing a naive datetime: pass an aware UTC one")
    at = moment.astimezone(UTC)
    column = _t.completed_at
    day_before = (at - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    return sa.or_(
        column >= at.strftime("%Y-%m-%dT%H:%M:%S"),
        sa.and_(column >= at.strftime("%Y-%m-%d %H:%M:%S"), column < at.strftime("%Y-%m-%dT")),
        sa.and_(column >= day_before, sa.or_(*(column.like(p) for p in _NEGATIVE_OFFSETS))),
    )


def completed_time(run: CompletedRun | SkippedRow) -> datetime | None:
    """When the run completed (aware UTC), or None when its ``completed_at`` cannot be read."""
    try:
        return parse_utc(run.completed_at)
    except BadTimestamp:
        return None
