"""Capacity slots: one per running execution, released one execution at a time.

Two stores with one interface: Redis with Trinity's key layout (production), and an SQL table in
the platform database (the embedded default). Releasing removes exactly that execution's slot;
an agent's other slots are never touched.

``slot_metadata`` holds every table the embedded default keeps beside Trinity's own: the slots and
the in-flight dispatch markers (:mod:`exec_watchdog.platform_access.inflight`), which Trinity keeps in Redis.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import redis
import sqlalchemy as sa

from exec_watchdog.common.flags import ConfigError
from exec_watchdog.platform_access.slot_expiry import (
    GOVERNOR_PAUSE_KEY,
    SLOT_TTL_MARGIN_SECONDS,
    SlotEntry,
    is_placeholder,
)

slot_metadata = sa.MetaData()
agent_slots = sa.Table(
    "agent_slots",
    slot_metadata,
    sa.Column("agent_name", sa.Text, primary_key=True),
    sa.Column("execution_id", sa.Text, primary_key=True),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("message_preview", sa.Text, nullable=False, server_default=""),
    sa.Column("slot_number", sa.Integer, nullable=False),
    sa.Column("timeout_seconds", sa.Integer, nullable=False),
)
execution_inflight = sa.Table(  # read and written by platform_access.inflight.SqlInflight
    "execution_inflight",
    slot_metadata,
    sa.Column("execution_id", sa.Text, primary_key=True),
    sa.Column("agent_name", sa.Text, nullable=False),
    sa.Column("phase", sa.Text, nullable=False),
    sa.Column("since", sa.Float, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)


class SlotStore(Protocol):
    def acquire(self, agent: str, execution_id: str, started_at: datetime, message_preview: str,
                timeout_seconds: int) -> int:
        """Take a slot; returns its slot number."""

    def release(self, agent: str, execution_id: str) -> bool:
        """Free exactly this execution's slot. True if a slot was held (idempotent)."""

    def release_many(self, slots: list[tuple[str, str]]) -> int:
        """Release many (agent, execution_id) slots in one round trip; returns how many were held."""

    def held(self, agent: str) -> set[str]:
        """Execution ids holding a slot on this agent."""

    def used_by_agent(self) -> dict[str, int]:
        """Slots in use, per agent that has any."""

    def entries(self) -> list[SlotEntry]:
        """Every slot but the ``drain-…`` placeholders, with its score and hash timeout."""

    def entry(self, agent: str, execution_id: str) -> SlotEntry | None:
        """This one slot as held now; None when it is not held."""

    def paused(self) -> bool:
        """True while Trinity's re-delivery governor pauses the slot phase (``governor:pause``)."""


def _members_key(agent: str) -> str:
    return f"agent:slots:{agent}"


def _slot_key(agent: str, execution_id: str) -> str:
    return f"agent:slot:{agent}:{execution_id}"


class RedisSlots:
    """Trinity's layout: ``agent:slots:{agent}`` sorted set + ``agent:slot:{agent}:{id}`` hash."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @classmethod
    def from_url(cls, url: str) -> RedisSlots:
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5))

    def acquire(self, agent: str, execution_id: str, started_at: datetime, message_preview: str,
                timeout_seconds: int) -> int:
        slot_number = int(self._redis.zcard(_members_key(agent))) + 1
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(_members_key(agent), {execution_id: started_at.timestamp()})
            pipe.hset(_slot_key(agent, execution_id), mapping={
                "started_at": started_at.isoformat(), "message_preview": message_preview[:100],
                "slot_number": slot_number, "timeout_seconds": timeout_seconds,
            })
            pipe.expire(_slot_key(agent, execution_id), timeout_seconds + SLOT_TTL_MARGIN_SECONDS)
            pipe.execute()
        return slot_number

    def release(self, agent: str, execution_id: str) -> bool:
        return self.release_many([(agent, execution_id)]) == 1

    def release_many(self, slots: list[tuple[str, str]]) -> int:
        with self._redis.pipeline(transaction=True) as pipe:
            for agent, execution_id in slots:
                pipe.zrem(_members_key(agent), execution_id)
                pipe.delete(_slot_key(agent, execution_id))
            results = pipe.execute()
        return sum(1 for removed, deleted in zip(results[::2], results[1::2], strict=True) if removed or deleted)

    def held(self, agent: str) -> set[str]:
        return {m.decode() if isinstance(m, bytes) else str(m) for m in self._redis.zrange(_members_key(agent), 0, -1)}

    def used_by_agent(self) -> dict[str, int]:
        keys = [_text(k) for k in self._redis.scan_iter(match="agent:slots:*", count=1000)]
        with self._redis.pipeline(transaction=False) as pipe:  # one round trip, not one per agent
            for key in keys:
                pipe.zcard(key)
            counts = pipe.execute()
        return {key.removeprefix("agent:slots:"): int(n) for key, n in zip(keys, counts, strict=True) if n}

    def entries(self) -> list[SlotEntry]:
        agents = [_text(k).removeprefix("agent:slots:") for k in self._redis.scan_iter(match="agent:slots:*",
                                                                                       count=1000)]
        with self._redis.pipeline(transaction=False) as pipe:
            for agent in agents:
                pipe.zrange(_members_key(agent), 0, -1, withscores=True)
            members = pipe.execute()
        held = [(agent, _text(m), float(score)) for agent, found in zip(agents, members, strict=True)
                for m, score in found if not is_placeholder(_text(m))]
        with self._redis.pipeline(transaction=False) as pipe:
            for agent, execution_id, _ in held:
                pipe.hget(_slot_key(agent, execution_id), "timeout_seconds")
            timeouts = pipe.execute()
        return [SlotEntry(agent, execution_id, score, _timeout(raw))
                for (agent, execution_id, score), raw in zip(held, timeouts, strict=True)]

    def entry(self, agent: str, execution_id: str) -> SlotEntry | None:
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.zscore(_members_key(agent), execution_id)
            pipe.hget(_slot_key(agent, execution_id), "timeout_seconds")
            score, raw = pipe.execute()
        return None if score is None else SlotEntry(agent, execution_id, float(score), _timeout(raw))

    def paused(self) -> bool:
        return bool(self._redis.exists(GOVERNOR_PAUSE_KEY))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _timeout(raw: object) -> int | None:
    """The hash's ``timeout_seconds``; None when the hash is gone or holds no whole number."""
    try:
        return int(_text(raw)) if raw is not None else None
    except ValueError:
        return None


class SqlSlots:
    """The embedded default: slots as rows of ``agent_slots`` in the platform database."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def acquire(self, agent: str, execution_id: str, started_at: datetime, message_preview: str,
                timeout_seconds: int) -> int:
        with self._engine.begin() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(agent_slots)
                                 .where(agent_slots.c.agent_name == agent)).scalar_one()
            conn.execute(sa.insert(agent_slots).values(
                agent_name=agent, execution_id=execution_id, started_at=started_at.timestamp(),
                message_preview=message_preview[:100], slot_number=count + 1, timeout_seconds=timeout_seconds))
        return int(count) + 1

    def release(self, agent: str, execution_id: str) -> bool:
        return self.release_many([(agent, execution_id)]) == 1

    def release_many(self, slots: list[tuple[str, str]]) -> int:
        released = 0
        key = sa.tuple_(agent_slots.c.agent_name, agent_slots.c.execution_id)
        with self._engine.begin() as conn:
            for start in range(0, len(slots), 500):
                result = conn.execute(sa.delete(agent_slots).where(key.in_(slots[start:start + 500])))
                released += result.rowcount
        return released

    def held(self, agent: str) -> set[str]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(agent_slots.c.execution_id).where(agent_slots.c.agent_name == agent))
            return {r[0] for r in rows}

    def used_by_agent(self) -> dict[str, int]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(agent_slots.c.agent_name, sa.func.count())
                                .group_by(agent_slots.c.agent_name))
            return {name: int(n) for name, n in rows}

    def entries(self) -> list[SlotEntry]:
        t = agent_slots.c
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(t.agent_name, t.execution_id, t.started_at, t.timeout_seconds))
            return [SlotEntry(a, e, float(s), int(timeout)) for a, e, s, timeout in rows if not is_placeholder(e)]

    def entry(self, agent: str, execution_id: str) -> SlotEntry | None:
        t = agent_slots.c
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(t.started_at, t.timeout_seconds)
                               .where(t.agent_name == agent, t.execution_id == execution_id)).first()
        return None if row is None else SlotEntry(agent, execution_id, float(row[0]), int(row[1]))

    def paused(self) -> bool:
        return False  # the embedded default has no re-delivery governor


class EmbeddedTablesMissing(ConfigError):
    """No Redis configured, and the database lacks the tables that stand in for it."""


def require_store_for(redis_url: str | None, engine: sa.Engine) -> None:
    """Without Redis, slots and in-flight markers live in SQL tables: refuse a database without them.

    Trinity's own database has neither table (Trinity keeps both in Redis); running against it
    without ``--redis-url`` would fail runs and then retry their slot releases forever. A database
    that cannot be reached now is let through: every later read reports it.
    """
    if redis_url:
        return
    try:
        existing = set(sa.inspect(engine).get_table_names())
    except (sa.exc.OperationalError, sa.exc.InterfaceError):
        return
    missing = sorted({t.name for t in slot_metadata.sorted_tables} - existing)
    if missing and "schedule_executions" in existing:  # an empty database is not Trinity's either
        raise EmbeddedTablesMissing(
            f"the database has no {' or '.join(missing)} table: it looks like Trinity's own database, which "
            "keeps capacity slots and in-flight markers in Redis; pass --redis-url (the Redis Trinity uses)")


def require_store_at(database_url: str, redis_url: str | None) -> None:
    """:func:`require_store_for`, checked once at a service's start on a short-lived engine."""
    from exec_watchdog.platform_access.database import create_engine

    engine = create_engine(database_url)
    try:
        require_store_for(redis_url, engine)
    finally:
        engine.dispose()


def open_slot_store(redis_url: str | None, engine: sa.Engine) -> SlotStore:
    """Redis when a URL is configured, else the SQL table beside the executions."""
    if redis_url:
        return RedisSlots.from_url(redis_url)
    return SqlSlots(engine)
