"""The remediator's own tables: an audit trail of every decision, and the recoveries outbox.

``watchdog_recoveries`` has one row per recovery (an execution id and when it was recovered: a
run that comes back to ``running`` after a recovery can be recovered again), written in the same transaction as
the guarded ``running -> failed`` update. It is what makes the slot release and the announcement
happen exactly once: whoever holds the row's claim finishes it, and a crashed claim expires so a
later notification, the background sweep or another replica finishes it instead.

Each decision row carries its evidence (``remediator/evidence.py``) as bounded JSON text. Tables
made by an earlier version lack that column: :func:`create_tables` adds it, and their old rows
keep ``NULL`` evidence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog

from exec_watchdog.platform_access.timestamps import BadTimestamp, format_utc, parse_utc

log = structlog.get_logger("exec_watchdog.remediator")
audit_metadata = sa.MetaData()

decisions = sa.Table(
    "watchdog_decisions",
    audit_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("decided_at", sa.Text, nullable=False),
    sa.Column("replica", sa.Text, nullable=False),
    sa.Column("alertname", sa.Text, nullable=False),
    sa.Column("alert_status", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("remediation", sa.Text, nullable=False),
    sa.Column("agent_name", sa.Text, nullable=False),
    sa.Column("execution_id", sa.Text, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("evidence", sa.Text),  # JSON; NULL on rows written before evidence existed
    sa.Index("idx_watchdog_decisions_execution", "execution_id"),
    sa.Index("idx_watchdog_decisions_agent", "agent_name"),
)

recoveries = sa.Table(
    "watchdog_recoveries",
    audit_metadata,
    sa.Column("execution_id", sa.Text, primary_key=True),
    sa.Column("agent_name", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("runtime_seconds", sa.Float, nullable=False),
    sa.Column("alert_started_at", sa.Text, nullable=False),
    sa.Column("recovered_at", sa.Text, primary_key=True),
    sa.Column("slot_released_at", sa.Text),
    sa.Column("announced_at", sa.Text),
    sa.Column("claimed_by", sa.Text),
    sa.Column("claim_expires_at", sa.Text),
    sa.Index("idx_watchdog_recoveries_open", "announced_at"),
)


@dataclass(frozen=True, slots=True)
class Decision:
    alertname: str
    alert_status: str
    fingerprint: str
    remediation: str
    agent_name: str
    execution_id: str
    outcome: str
    reason: str
    evidence: str | None = None


@dataclass(frozen=True, slots=True)
class Recovery:
    execution_id: str
    agent_name: str
    action: str
    reason: str
    fingerprint: str
    runtime_seconds: float
    alert_started_at: datetime
    recovered_at: datetime


def create_tables(engine: sa.Engine) -> None:
    """Create the remediator's tables if missing; Trinity's own tables are never touched.

    Replicas starting together race to create them; the loser sees the winner's tables on retry.
    """
    for attempt in range(3):
        try:
            audit_metadata.create_all(engine, checkfirst=True)
            _add_missing_columns(engine)
            return
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.OperationalError):
            if attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))


# Columns added to existing tables since their first version: (table, column, SQL type).
_ADDED_COLUMNS = ((decisions, "evidence", "TEXT"),)


def _add_missing_columns(engine: sa.Engine) -> None:
    """Bring tables an earlier version created up to date. A replica adding the same column at the
    same moment makes this ALTER fail; create_tables' retry then finds the column there."""
    for table, column, sql_type in _ADDED_COLUMNS:
        if column not in {c["name"] for c in sa.inspect(engine).get_columns(table.name)}:
            with engine.begin() as conn:
                conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column} {sql_type}"))


def record(conn: sa.Connection, items: list[Decision], replica: str, now: datetime) -> None:
    if items:
        stamp = format_utc(now)
        conn.execute(sa.insert(decisions), [
            {"decided_at": stamp, "replica": replica, **_as_row(d)} for d in items])


def _as_row(d: Decision) -> dict[str, Any]:
    return {k: getattr(d, k) for k in Decision.__slots__}


def open_recoveries(conn: sa.Connection, items: list[Recovery], replica: str, claim_ttl: float) -> None:
    """Insert the outbox rows, already claimed by the replica that won the transitions."""
    if items:
        conn.execute(sa.insert(recoveries), [{
            "execution_id": r.execution_id, "agent_name": r.agent_name, "action": r.action, "reason": r.reason,
            "fingerprint": r.fingerprint, "runtime_seconds": r.runtime_seconds,
            "alert_started_at": format_utc(r.alert_started_at), "recovered_at": format_utc(r.recovered_at),
            "claimed_by": replica,
            "claim_expires_at": format_utc(r.recovered_at + timedelta(seconds=claim_ttl)),
        } for r in items])


def claim_unfinished(engine: sa.Engine, replica: str, now: datetime, claim_ttl: float,
                     limit: int = 500) -> list[Recovery]:
    """Claim recoveries whose earlier claim expired before they were announced."""
    stamp = format_utc(now)
    open_rows = sa.and_(recoveries.c.announced_at.is_(None), recoveries.c.claim_expires_at < stamp)
    with engine.begin() as conn:
        ids = [r[0] for r in conn.execute(sa.select(recoveries.c.execution_id).where(open_rows).limit(limit))]
        claimed = []
        for execution_id in ids:
            # Guarded like every write: only one replica takes an expired claim.
            won = conn.execute(sa.update(recoveries).where(recoveries.c.execution_id == execution_id, open_rows)
                               .values(claimed_by=replica,
                                       claim_expires_at=format_utc(now + timedelta(seconds=claim_ttl))))
            if won.rowcount == 1:
                claimed.append(execution_id)
        query = sa.select(recoveries).where(recoveries.c.execution_id.in_(claimed))
        rows = conn.execute(query).all() if claimed else []
    return [_recovery(row) for row in rows]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _recovery(row: Any) -> Recovery:
    """The outbox row as a recovery to finish. A field that cannot be read (a hostile alert's start,
    a hand-edited row) is replaced, never a reason to leave the recovery unfinished: the alert's
    start by the recovery's time, the recovery's time by the epoch (stable, so a retried
    announcement is still recognised as the same one)."""
    problems = []

    def stamp(value: object, fallback: datetime | None, name: str) -> datetime:
        try:
            return parse_utc(value)
        except BadTimestamp:
            problems.append(f"{name} {str(value)[:40]!r}")
            return fallback or _EPOCH

    recovered_at = stamp(row.recovered_at, None, "recovered_at")
    alert_started_at = stamp(row.alert_started_at, recovered_at, "alert_started_at")
    runtime = row.runtime_seconds if isinstance(row.runtime_seconds, int | float) else 0.0
    if problems:
        log.warning("unreadable_recovery_fields", execution_id=str(row.execution_id)[:200],
                    replaced=", ".join(problems))
    return Recovery(
        execution_id=str(row.execution_id), agent_name=str(row.agent_name), action=str(row.action),
        reason=str(row.reason), fingerprint=str(row.fingerprint), runtime_seconds=float(runtime),
        alert_started_at=alert_started_at, recovered_at=recovered_at,
    )


def mark_finished(conn: sa.Connection, execution_ids: list[str], now: datetime, replica: str) -> None:
    """Record that the slots were released and the events announced, by the claim holder only."""
    if execution_ids:
        stamp = format_utc(now)
        conn.execute(sa.update(recoveries)
                     .where(recoveries.c.execution_id.in_(execution_ids), recoveries.c.claimed_by == replica,
                            recoveries.c.announced_at.is_(None))
                     .values(slot_released_at=stamp, announced_at=stamp))


def missing_tables(engine: sa.Engine) -> list[str]:
    """The remediator's tables the database lacks (dropped or never created); [] if it cannot tell."""
    try:
        present = set(sa.inspect(engine).get_table_names())
    except sa.exc.SQLAlchemyError:
        return []
    return [t.name for t in audit_metadata.sorted_tables if t.name not in present]


def count_unfinished(conn: sa.Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(recoveries)
                            .where(recoveries.c.announced_at.is_(None))).scalar_one())


# The audit list leaves the evidence out (it is the bulk of a row); the story has it.
_DECISION_SUMMARY = [c for c in decisions.c if c.name != "evidence"]


def recent(conn: sa.Connection, *, agent: str | None, execution_id: str | None, limit: int) -> list[dict[str, Any]]:
    """Recent decisions joined with their recovery, newest first, for the audit API and page."""
    query = (sa.select(*_DECISION_SUMMARY, recoveries.c.runtime_seconds, recoveries.c.recovered_at,
                       recoveries.c.alert_started_at, recoveries.c.announced_at)
             .select_from(decisions.outerjoin(recoveries, sa.and_(
                 recoveries.c.execution_id == decisions.c.execution_id, decisions.c.outcome == "recovered")))
             .order_by(decisions.c.id.desc()).limit(limit))
    if agent:
        query = query.where(decisions.c.agent_name == agent)
    if execution_id:
        query = query.where(decisions.c.execution_id == execution_id)
    return [dict(r._mapping) for r in conn.execute(query)]
