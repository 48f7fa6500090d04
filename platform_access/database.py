"""Reading running executions and failing them, on SQLite (embedded default) or PostgreSQL.

Every write is guarded with ``status = 'running'`` (and no lease): other writers race with us,
and the database decides which one wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from exec_watchdog.platform_access.schema import (
    DEFAULT_MAX_PARALLEL_TASKS,
    DEFAULT_TIMEOUT_SECONDS,
    PLATFORM_TABLES,
    RUNNING,
    STATUSES,
    TERMINAL_STATUSES,
    ZERO_TIMEOUT_SECONDS,
    agent_ownership,
    agent_schedules,
    metadata,
    schedule_executions,
)
from exec_watchdog.platform_access.timestamps import BadTimestamp, format_utc, parse_utc
from exec_watchdog.platform_access.urls import redacted_url


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
    agent_deleted: bool = False  # agent_ownership.deleted_at is set: not the watchdog's business
    timeout_source: str = "default"  # where the effective timeout came from: schedule, agent or default
    # Trinity's stale sweep (Phase 1) counts from the agent's own timeout, COALESCE(agent, 3600);
    # None when the agent is unknown to agent_ownership or soft-deleted (its window is then flat).
    agent_timeout_seconds: int | None = DEFAULT_TIMEOUT_SECONDS
    # claude_session_id is NULL or '': Trinity's Phase 1b calls such a run a silent launch failure.
    session_missing: bool = False

    def runtime_seconds(self, now: datetime) -> float:
        return (now - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class Agent:
    name: str
    max_parallel_tasks: int


STATEMENT_TIMEOUT_SECONDS = 10.0  # no query of ours runs longer; a stuck one must fail, not pile up
LOCK_TIMEOUT_SECONDS = 3.0  # a row another writer holds locked: give up (and retry later) instead of queueing


def redacted(url: str | sa.URL) -> str:
    """A database URL fit for logs and error messages: the password is never shown."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return redacted_url(str(url))  # not a SQLAlchemy URL: mask whatever looks like a password


def create_engine(url: str, *, statement_timeout: float = STATEMENT_TIMEOUT_SECONDS,
                  lock_timeout: float = LOCK_TIMEOUT_SECONDS, **kwargs: Any) -> sa.Engine:
    """An engine whose connections give up instead of waiting without end: PostgreSQL gets a
    statement and a lock timeout on every connection, SQLite a busy timeout.

    Opening never changes the file: WAL is switched on only by :func:`create_platform_tables`
    for a database it created, so a refused ``db init`` or a read-only URL
    (``sqlite:///file:trinity.db?mode=ro&uri=true``) leaves the journal mode as it was.
    """
    try:
        parsed = sa.make_url(url)
        parsed.port  # noqa: B018 (a non-numeric port only fails when read)
    except (sa.exc.ArgumentError, ValueError):
        raise ValueError(
            f"unparseable database URL {redacted(url)!r}: use sqlite:///path/to/file.db or "
            "postgresql+psycopg://user@host:5432/dbname") from None
    if parsed.get_backend_name() == "sqlite":
        # SQLite has no statement timeout; its writers queue for the one write lock at most this long.
        kwargs.setdefault("connect_args", {"timeout": statement_timeout, "check_same_thread": False})
        engine = sa.create_engine(parsed, **kwargs)
        busy_ms = int(statement_timeout * 1000)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Text that is not UTF-8 must cost its own row (BadRow), not the whole query.
            dbapi_conn.text_factory = _lenient_text
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA synchronous=NORMAL")  # per connection: the file is not changed
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            cur.close()

        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":  # plain postgresql:// means psycopg 3 here
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_size", 10)
        connect_args = dict(kwargs.pop("connect_args", {}))
        options = connect_args.get("options", "")
        for setting, seconds in (("statement_timeout", statement_timeout), ("lock_timeout", lock_timeout)):
            if f"{setting}=" not in options:  # the caller's own value wins
                options += f" -c {setting}={int(seconds * 1000)}"
        connect_args["options"] = options.strip()
        return sa.create_engine(parsed, connect_args=connect_args, **kwargs)
    raise ValueError(f"unsupported database {parsed.get_backend_name()!r}: use SQLite or PostgreSQL")


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _readable_text(value: object) -> bool:
    """False for text SQLite handed back with undecodable bytes (see ``_lenient_text``)."""
    if not isinstance(value, str):
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def database_now(conn: sa.Connection) -> datetime:
    """The database's clock, as aware UTC. Ages are measured on it: the platform wrote
    ``started_at`` on that clock (or close to it), and ours may be skewed."""
    if conn.dialect.name == "postgresql":
        value = conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
    else:
        value = conn.execute(sa.text("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')")).scalar_one()
    return parse_utc(value)


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
    if engine.dialect.name == "sqlite":  # ours now: readers and writers side by side (persists in the file)
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")


def effective_timeout_with_source(schedule_timeout: object, agent_timeout: object) -> tuple[int, str]:
    """Trinity's rule: COALESCE(schedule, agent, 3600), then 0 (or anything but a positive integer)
    is 900 s; and which one it came from (schedule, agent or default), for the evidence."""
    value, source = next(((v, s) for v, s in ((schedule_timeout, "schedule"), (agent_timeout, "agent"))
                          if v is not None), (DEFAULT_TIMEOUT_SECONDS, "default"))
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value, source
    return ZERO_TIMEOUT_SECONDS, source


def effective_timeout(schedule_timeout: object, agent_timeout: object) -> int:
    return effective_timeout_with_source(schedule_timeout, agent_timeout)[0]


_SELECT_EXECUTIONS = sa.select(
    schedule_executions.c.id,
    schedule_executions.c.agent_name,
    schedule_executions.c.schedule_id,
    schedule_executions.c.status,
    schedule_executions.c.started_at,
    schedule_executions.c.lease_expires_at,
    agent_schedules.c.timeout_seconds.label("schedule_timeout"),
    agent_ownership.c.execution_timeout_seconds.label("agent_timeout"),
    agent_ownership.c.deleted_at.label("agent_deleted_at"),
    agent_ownership.c.agent_name.label("owned_agent"),
    schedule_executions.c.claude_session_id,
).select_from(
    schedule_executions.outerjoin(agent_schedules, agent_schedules.c.id == schedule_executions.c.schedule_id)
    .outerjoin(agent_ownership, agent_ownership.c.agent_name == schedule_executions.c.agent_name)
)


def _to_execution(row: Any) -> Execution:
    if not all(_readable_text(v) for v in row):
        raise BadRow(f"execution {row.id!r} has text that is not valid UTF-8")
    if not isinstance(row.agent_name, str) or not row.agent_name:
        raise BadRow(f"execution {row.id!r} has no agent_name")
    if row.status not in STATUSES:
        raise BadRow(f"execution {row.id!r} has unknown status {row.status!r}")
    try:
        started = parse_utc(row.started_at)
    except BadTimestamp as exc:
        raise BadRow(f"execution {row.id!r}: started_at: {exc}") from None
    timeout, timeout_source = effective_timeout_with_source(row.schedule_timeout, row.agent_timeout)
    return Execution(
        id=str(row.id),
        agent_name=row.agent_name,
        schedule_id=str(row.schedule_id),
        status=row.status,
        started_at=started,
        timeout_seconds=timeout,
        leased=row.lease_expires_at is not None,
        agent_deleted=row.agent_deleted_at is not None,
        timeout_source=timeout_source,
        agent_timeout_seconds=stale_base_seconds(row.owned_agent is not None, row.agent_deleted_at is not None,
                                                 row.agent_timeout),
        session_missing=row.claude_session_id is None or row.claude_session_id == "",
    )


def stale_base_seconds(owned: bool, deleted: bool, agent_timeout: object) -> int | None:
    """What Trinity's stale sweep adds its 300 s to: COALESCE(execution_timeout_seconds, 3600) of a
    live agent in agent_ownership; None for an unknown or soft-deleted agent (flat 120 min)."""
    if not owned or deleted:
        return None
    if isinstance(agent_timeout, int) and not isinstance(agent_timeout, bool):
        return max(0, agent_timeout)
    return DEFAULT_TIMEOUT_SECONDS


def running_executions(conn: sa.Connection, agent_names: Sequence[str | None] | None = None,
                       ) -> tuple[list[Execution], list[BadRow]]:
    """Every running execution that is ours to watch, and the unreadable ones.

    Lease rows belong to another reaper; rows of soft-deleted agents are not the watchdog's business.
    ``agent_names`` limits the read to those agents' rows (``None`` in it: rows without an agent).
    """
    query = _SELECT_EXECUTIONS.where(
        schedule_executions.c.status == RUNNING, schedule_executions.c.lease_expires_at.is_(None),
        agent_ownership.c.deleted_at.is_(None),
    )
    queries = [query] if agent_names is None else [query.where(f) for f in _agent_filters(agent_names)]
    good: list[Execution] = []
    bad: list[BadRow] = []
    for q in queries:
        for row in conn.execute(q):
            try:
                good.append(_to_execution(row))
            except BadRow as exc:
                bad.append(exc)
    return good, bad


def deleted_agents_running(conn: sa.Connection) -> tuple[list[Execution], list[BadRow]]:
    """Running rows (no lease) of soft-deleted agents: not the watchdog's business, except that
    Trinity's stale sweep still ends them after its flat 120 minutes."""
    query = _SELECT_EXECUTIONS.where(
        schedule_executions.c.status == RUNNING, schedule_executions.c.lease_expires_at.is_(None),
        agent_ownership.c.deleted_at.is_not(None),
    )
    good: list[Execution] = []
    bad: list[BadRow] = []
    for row in conn.execute(query):
        try:
            good.append(_to_execution(row))
        except BadRow as exc:
            bad.append(exc)
    return good, bad


def _agent_filters(names: Sequence[str | None], chunk: int = 5000) -> list[sa.ColumnElement[bool]]:
    column = schedule_executions.c.agent_name
    named = [n for n in names if n is not None]
    filters: list[sa.ColumnElement[bool]] = [column.in_(named[i:i + chunk]) for i in range(0, len(named), chunk)]
    if None in names:
        filters.append(column.is_(None))
    return filters


def running_agent_names(conn: sa.Connection) -> list[str | None]:
    """The distinct agents of the running rows we watch (``None`` for rows without one)."""
    query = sa.select(schedule_executions.c.agent_name).distinct().where(
        schedule_executions.c.status == RUNNING, schedule_executions.c.lease_expires_at.is_(None))
    return list(conn.execute(query).scalars())


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
    """``running -> failed`` if nobody else changed the row first. True when this call won.

    ``duration_ms`` is NULL, as Trinity's watchdog writes it on a failure.
    """
    result = conn.execute(_FAIL_EXECUTION, {"run_id": execution.id, "run_error": error,
                                            "run_completed_at": format_utc(now)})
    return result.rowcount == 1


# Built once: a mass orphaning runs it a thousand times, and building it is most of its cost.
_FAIL_EXECUTION = (
    sa.update(schedule_executions)
    .where(
        schedule_executions.c.id == sa.bindparam("run_id"),
        schedule_executions.c.status == RUNNING,
        schedule_executions.c.lease_expires_at.is_(None),
    )
    .values(status="failed", error=sa.bindparam("run_error"), completed_at=sa.bindparam("run_completed_at"),
            duration_ms=None)
)


PG_INTEGER_MAX = 2**31 - 1  # duration_ms is an INTEGER column in PostgreSQL


def duration_ms(started_at: datetime, completed_at: datetime) -> int | None:
    """Elapsed milliseconds, clamped at 0; NULL above INTEGER (a stale start, not a measurement)."""
    ms = max(0, int((completed_at - started_at).total_seconds() * 1000))
    return None if ms > PG_INTEGER_MAX else ms


@dataclass(frozen=True, slots=True)
class Claim:
    """The columns a claimed retained result writes (the remediator decides them)."""

    status: str  # success | failed | cancelled
    response: str | None
    error: str | None
    cost: float | None
    session_id: str | None
    execution_log: str | None


def claim_execution(conn: sa.Connection, execution: Execution, claim: Claim, now: datetime) -> bool:
    """Write a retained result over the row, guarded as Trinity guards it. True when this call won.

    A success may overwrite anything but ``cancelled`` (and an earlier success); a failure or a
    cancel only a non-terminal status. Lease rows are never touched.
    """
    table = schedule_executions
    if claim.status == "success":
        guard = table.c.status.notin_(("cancelled", "success"))
    else:
        guard = table.c.status.notin_(sorted(TERMINAL_STATUSES))
    result = conn.execute(
        sa.update(table)
        .where(table.c.id == execution.id, guard, table.c.lease_expires_at.is_(None))
        .values(status=claim.status, response=claim.response, error=claim.error, completed_at=format_utc(now),
                duration_ms=duration_ms(execution.started_at, now), cost=claim.cost,
                claude_session_id=claim.session_id, execution_log=claim.execution_log)
    )
    return result.rowcount == 1


def agents(conn: sa.Connection) -> list[Agent]:
    """Agents known to the platform (``agent_ownership``, soft-deleted ones left out) with their limit."""
    rows = conn.execute(sa.select(agent_ownership.c.agent_name, agent_ownership.c.max_parallel_tasks)
                        .where(agent_ownership.c.deleted_at.is_(None)))
    out = []
    for name, limit in rows:
        if isinstance(name, str) and name:
            ok = isinstance(limit, int) and not isinstance(limit, bool) and limit > 0
            out.append(Agent(name, limit if ok else DEFAULT_MAX_PARALLEL_TASKS))
    return out


# -- read-only commands: never create the database they read --------------------------------------

class MissingDatabase(ValueError):
    """A read-only command was pointed at a SQLite file that does not exist (opening would create it)."""


def require_existing(url: str) -> None:
    """Refuse a SQLite URL whose file does not exist: SQLite would create an empty one on connect.

    For read-only commands (``advise``, ``explain``): they must change nothing, and "no such table"
    on a file just created hides the real mistake (a wrong path). In-memory databases and other
    backends pass; an unparseable URL is left to :func:`create_engine` to report.
    """
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return
    if parsed.get_backend_name() != "sqlite":
        return
    path = parsed.database or ""
    if path.startswith("file:") and str(parsed.query.get("uri", "")).lower() in ("true", "1"):
        if "memory" in str(parsed.query.get("mode", "")):
            return
        path = path.removeprefix("file:").removeprefix("//")
    if not path or path == ":memory:":
        return
    if not Path(path).is_file():
        raise MissingDatabase(f"the SQLite database file {path!r} does not exist (nothing was created): "
                              "check the path in --database-url")
