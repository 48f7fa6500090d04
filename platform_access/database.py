"""Reading running executions and failing them, on SQLite (embedded default) or PostgreSQL.

Every write is guarded with ``status = 'running'`` (and no lease): other writers race with us,
and the database decides which one wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from platform_access.schema import (
    DEFAULT_MAX_PARALLEL_TASKS,
    DEFAULT_TIMEOUT_SECONDS,
    PLATFORM_TABLES,
    RUNNING,
    STATUSES,
    agent_ownership,
    agent_schedules,
    metadata,
    schedule_executions,
)
from platform_access.timestamps import BadTimestamp, format_utc, parse_utc


class BadRow(ValueError):
    """A database row we cannot act on safely; the message names the row and the problem."""


class DatabaseExists(RuntimeError):
    """``db init`` was pointed at a database that already has platform tables."""


@dataclass(frozen=True, slots=True)
class Execution:
    """One row of ``schedule_executions`` with its effective timeout resolved."""

    id: str
    agent_name: str
    schedule_id: str
    status: str
    started_at: datetime
    timeout_seconds: int
    leased: bool
    timeout_source: str = "default"  # where the effective timeout came from: schedule, agent or default

    def runtime_seconds(self, now: datetime) -> float:
        return (now - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class Agent:
    name: str
    max_parallel_tasks: int


def create_engine(url: str, **kwargs: Any) -> sa.Engine:
    """An engine with the settings concurrent writers need (SQLite: WAL and a busy timeout)."""
    try:
        parsed = sa.make_url(url)
        parsed.port  # noqa: B018 (a non-numeric port only fails when read)
    except (sa.exc.ArgumentError, ValueError):
        raise ValueError(
            f"unparseable database URL {url!r}: use sqlite:///path/to/file.db or "
            "postgresql+psycopg://user@host:5432/dbname") from None
    if parsed.get_backend_name() == "sqlite":
        kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
        engine = sa.create_engine(parsed, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":  # plain postgresql:// means psycopg 3 here
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_size", 10)
        return sa.create_engine(parsed, **kwargs)
    raise ValueError(f"unsupported database {parsed.get_backend_name()!r}: use SQLite or PostgreSQL")


def create_platform_tables(engine: sa.Engine, extra: sa.MetaData | None = None) -> None:
    """Create Trinity's tables (the columns we use) in an empty database; refuse otherwise."""
    existing = set(sa.inspect(engine).get_table_names())
    clash = sorted(existing & {t.name for t in PLATFORM_TABLES})
    if clash:
        raise DatabaseExists(
            f"the database already has {', '.join(clash)}: exec-watchdog never alters an existing "
            "database; point --database-url at a new file to create the embedded default")
    metadata.create_all(engine)
    if extra is not None:
        extra.create_all(engine)


def _effective_timeout(schedule: object, agent: object) -> tuple[int, str]:
    """COALESCE(schedule, agent, 3600) and which one it was, skipping values no sane writer would store."""
    for value, source in ((schedule, "schedule"), (agent, "agent")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, source
    return DEFAULT_TIMEOUT_SECONDS, "default"


_SELECT_EXECUTIONS = sa.select(
    schedule_executions.c.id,
    schedule_executions.c.agent_name,
    schedule_executions.c.schedule_id,
    schedule_executions.c.status,
    schedule_executions.c.started_at,
    schedule_executions.c.lease_expires_at,
    agent_schedules.c.timeout_seconds.label("schedule_timeout"),
    agent_ownership.c.execution_timeout_seconds.label("agent_timeout"),
).select_from(
    schedule_executions.outerjoin(agent_schedules, agent_schedules.c.id == schedule_executions.c.schedule_id)
    .outerjoin(agent_ownership, agent_ownership.c.agent_name == schedule_executions.c.agent_name)
)


def _to_execution(row: Any) -> Execution:
    if not isinstance(row.agent_name, str) or not row.agent_name:
        raise BadRow(f"execution {row.id!r} has no agent_name")
    if row.status not in STATUSES:
        raise BadRow(f"execution {row.id!r} has unknown status {row.status!r}")
    try:
        started = parse_utc(row.started_at)
    except BadTimestamp as exc:
        raise BadRow(f"execution {row.id!r}: started_at: {exc}") from None
    timeout, timeout_source = _effective_timeout(row.schedule_timeout, row.agent_timeout)
    return Execution(
        id=str(row.id),
        agent_name=row.agent_name,
        schedule_id=str(row.schedule_id),
        status=row.status,
        started_at=started,
        timeout_seconds=timeout,
        leased=row.lease_expires_at is not None,
        timeout_source=timeout_source,
    )


def running_executions(conn: sa.Connection) -> tuple[list[Execution], list[BadRow]]:
    """Every running execution that is ours to watch (lease rows excluded), and the unreadable ones."""
    query = _SELECT_EXECUTIONS.where(
        schedule_executions.c.status == RUNNING, schedule_executions.c.lease_expires_at.is_(None)
    )
    good: list[Execution] = []
    bad: list[BadRow] = []
    for row in conn.execute(query):
        try:
            good.append(_to_execution(row))
        except BadRow as exc:
            bad.append(exc)
    return good, bad


def get_execution(conn: sa.Connection, execution_id: str) -> Execution | None:
    """One execution, whatever its status; ``None`` if absent, :class:`BadRow` if unreadable."""
    row = conn.execute(_SELECT_EXECUTIONS.where(schedule_executions.c.id == execution_id)).first()
    return None if row is None else _to_execution(row)


def get_executions(conn: sa.Connection, execution_ids: list[str]) -> dict[str, Execution | BadRow]:
    """Many executions in one query (batched webhook deliveries)."""
    found: dict[str, Execution | BadRow] = {}
    for start in range(0, len(execution_ids), 500):
        chunk = execution_ids[start:start + 500]
        for row in conn.execute(_SELECT_EXECUTIONS.where(schedule_executions.c.id.in_(chunk))):
            try:
                found[str(row.id)] = _to_execution(row)
            except BadRow as exc:
                found[str(row.id)] = exc
    return found


def fail_execution(conn: sa.Connection, execution: Execution, error: str, now: datetime) -> bool:
    """``running -> failed`` if nobody else changed the row first. True when this call won."""
    duration_ms = max(0, int((now - execution.started_at).total_seconds() * 1000))
    result = conn.execute(
        sa.update(schedule_executions)
        .where(
            schedule_executions.c.id == execution.id,
            schedule_executions.c.status == RUNNING,
            schedule_executions.c.lease_expires_at.is_(None),
        )
        .values(status="failed", error=error, completed_at=format_utc(now), duration_ms=duration_ms)
    )
    return result.rowcount == 1


def agents(conn: sa.Connection) -> list[Agent]:
    """Agents known to the platform (``agent_ownership``) with their parallel-task limit."""
    rows = conn.execute(sa.select(agent_ownership.c.agent_name, agent_ownership.c.max_parallel_tasks))
    out = []
    for name, limit in rows:
        if isinstance(name, str) and name:
            ok = isinstance(limit, int) and not isinstance(limit, bool) and limit > 0
            out.append(Agent(name, limit if ok else DEFAULT_MAX_PARALLEL_TASKS))
    return out
