"""In-flight dispatch markers (Trinity #2433): a run the backend still holds is not an orphan.

While a backend worker holds a dispatch (queued for the agent, or mid-call), the agent may not know
the run yet although its row already says ``running``. Trinity marks each such dispatch with the
Redis key ``execution:inflight:{id}`` = JSON ``{"agent", "phase", "since", "pid"}`` (``since`` is
unix seconds), TTL 60 s, refreshed every 15 s: liveness, not state, so a dead worker's marker lapses
on its own. The watchdog asks for every marker it needs in one round trip and gets a verdict per id;
it learns whether each key exists (and its type), never the marker's value, whatever its size:

- ``alive``: a marker exists, a dispatcher owns the run: never an orphan;
- ``absent``: the store answered and has no key at the marker's name: proceed;
- ``unknown``: the store could not be asked, or the name holds a key that is not a marker (another
  Redis type): hold the row while it is younger than the in-flight
  bound (:func:`withholds`), since a dispatcher cannot own a run for longer than that.

Two stores with one interface, like :mod:`exec_watchdog.platform_access.slots`: Redis with Trinity's layout, and
the ``execution_inflight`` table beside the executions for the embedded default (no Redis).
:func:`open_inflight_store` picks one the way :func:`exec_watchdog.platform_access.slots.open_slot_store` does.
The writer half (``mark`` / ``refresh`` / ``clear``) is what a dispatcher (the simulated scheduler)
uses; the watchdog only reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import redis
import sqlalchemy as sa

from exec_watchdog.platform_access.slots import execution_inflight

MARKER_PREFIX = "execution:inflight:"
MARKER_TTL_SECONDS = 60  # Trinity's INFLIGHT_MARKER_TTL_SECONDS
REFRESH_SECONDS = 15.0  # Trinity's INFLIGHT_TICK_SECONDS: a writer refreshes this often
# Trinity's inflight_max_age_seconds(): queue wait bound 3,600 + widest HTTP timeout 7,260 + 60 slack.
# No dispatcher can own a run longer, so an "unknown" verdict stops holding a row older than this.
DEFAULT_MAX_AGE_SECONDS = 10_920.0
_CHUNK = 500  # ids per SQL query


class Verdict(StrEnum):
    ALIVE = "alive"
    ABSENT = "absent"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Marker:
    """One marker's payload, as Trinity writes it."""

    agent: str
    phase: str
    since: float
    pid: int

    def to_json(self) -> str:
        return json.dumps({"agent": self.agent, "phase": self.phase, "since": self.since, "pid": self.pid})


def withholds(verdict: Verdict, row_age_seconds: float, max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS) -> bool:
    """True when a row with this verdict must not be treated as an orphan (Trinity's rule)."""
    if verdict is Verdict.ALIVE:
        return True
    return verdict is Verdict.UNKNOWN and row_age_seconds < max_age_seconds


class InflightStore(Protocol):
    def verdicts(self, execution_ids: Iterable[str]) -> dict[str, Verdict]:
        """A verdict for every id, read in one round trip; every id ``unknown`` if the store failed."""

    def mark(self, execution_id: str, agent: str, phase: str, since: float, pid: int) -> None:
        """Write (or overwrite) a dispatch's marker with a fresh TTL."""

    def refresh(self, execution_ids: Iterable[str]) -> None:
        """Give these markers a fresh TTL; a marker that already lapsed stays gone."""

    def clear(self, execution_id: str) -> None:
        """Remove a marker: the dispatch reached the agent or gave up (idempotent)."""


def marker_key(execution_id: str) -> str:
    return f"{MARKER_PREFIX}{execution_id}"


def _unique(execution_ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(execution_ids))


class RedisInflight:
    """Trinity's layout: ``execution:inflight:{id}`` string keys with a 60 s TTL."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 2.0) -> RedisInflight:
        return cls(redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout))

    def verdicts(self, execution_ids: Iterable[str]) -> dict[str, Verdict]:
        """``TYPE`` of every marker key, all sent at once (one round trip, as Trinity's one MGET), and
        no marker's value is ever transferred: a 5 MiB marker costs the same few bytes as a small one.

        Trinity reads with MGET, which answers nil for a key of another type; here a key of any
        type at a marker's name is never ``absent``: a string is ``alive`` (a dispatcher wrote it),
        any other type ``unknown`` (someone holds that name, but not as a marker we can vouch for),
        so its run is held while younger than the in-flight bound, never failed on a misreading.

        The commands are packed here and the replies read off one pooled connection: redis-py's
        pipeline machinery costs ~4x MGET's time for 10,000 keys, this ~1.6x
        (bench/bench_inflight.py).
        """
        ids = _unique(execution_ids)
        if not ids:
            return {}
        keys = [marker_key(i).encode() for i in ids]
        packed = b"".join(b"*2\r\n$4\r\nTYPE\r\n$%d\r\n%s\r\n" % (len(k), k) for k in keys)
        pool = self._redis.connection_pool
        try:
            connection = pool.get_connection()
            try:
                connection.send_packed_command([packed])  # type: ignore[no-untyped-call]
                types = [connection.read_response() for _ in keys]
            except BaseException:
                # Replies may be left unread (an error reply raises): never hand it back half-read.
                connection.disconnect()  # type: ignore[no-untyped-call]
                raise
            finally:
                pool.release(connection)
        except (redis.RedisError, OSError):
            return dict.fromkeys(ids, Verdict.UNKNOWN)
        return {i: _verdict_of_type(t) for i, t in zip(ids, types, strict=True)}

    def mark(self, execution_id: str, agent: str, phase: str, since: float, pid: int) -> None:
        self._redis.set(marker_key(execution_id), Marker(agent, phase, since, pid).to_json(), ex=MARKER_TTL_SECONDS)

    def refresh(self, execution_ids: Iterable[str]) -> None:
        with self._redis.pipeline(transaction=False) as pipe:
            for execution_id in _unique(execution_ids):
                pipe.expire(marker_key(execution_id), MARKER_TTL_SECONDS)
            pipe.execute()

    def clear(self, execution_id: str) -> None:
        self._redis.delete(marker_key(execution_id))

    def marker(self, execution_id: str) -> Marker | None:
        """One marker's payload (for tests and diagnostics)."""
        raw = self._redis.get(marker_key(execution_id))
        if raw is None:
            return None
        data = json.loads(raw)
        return Marker(str(data["agent"]), str(data["phase"]), float(data["since"]), int(data["pid"]))


def _verdict_of_type(reply: object) -> Verdict:
    """A ``TYPE`` reply (bytes, or str with ``decode_responses``) as a verdict."""
    name = reply.decode("ascii", "replace") if isinstance(reply, bytes) else str(reply)
    if name == "none":
        return Verdict.ABSENT
    return Verdict.ALIVE if name == "string" else Verdict.UNKNOWN


class SqlInflight:
    """The embedded default: markers as rows of ``execution_inflight`` with an expiry time.

    Expiry is compared with this process's clock, so writer and reader share a machine (the
    embedded default does); expired rows count as absent and are swept by the writer.
    """

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    def verdicts(self, execution_ids: Iterable[str]) -> dict[str, Verdict]:
        ids = _unique(execution_ids)
        table = execution_inflight
        alive: set[str] = set()
        try:
            with self._engine.connect() as conn:
                now = self._clock()
                for start in range(0, len(ids), _CHUNK):
                    rows = conn.execute(sa.select(table.c.execution_id).where(
                        table.c.execution_id.in_(ids[start:start + _CHUNK]), table.c.expires_at > now))
                    alive.update(r[0] for r in rows)
        except (sa.exc.SQLAlchemyError, OSError):
            return dict.fromkeys(ids, Verdict.UNKNOWN)
        return {i: Verdict.ALIVE if i in alive else Verdict.ABSENT for i in ids}

    def mark(self, execution_id: str, agent: str, phase: str, since: float, pid: int) -> None:
        table = execution_inflight
        now = self._clock()
        values = {"agent_name": agent, "phase": phase, "since": since, "pid": pid,
                  "expires_at": now + MARKER_TTL_SECONDS}
        with self._engine.begin() as conn:
            conn.execute(sa.delete(table).where(table.c.expires_at <= now))  # lapsed markers: swept here
            updated = conn.execute(sa.update(table).where(table.c.execution_id == execution_id).values(**values))
            if updated.rowcount == 0:
                conn.execute(sa.insert(table).values(execution_id=execution_id, **values))

    def refresh(self, execution_ids: Iterable[str]) -> None:
        ids = _unique(execution_ids)
        table = execution_inflight
        with self._engine.begin() as conn:
            now = self._clock()
            for start in range(0, len(ids), _CHUNK):
                conn.execute(sa.update(table).where(
                    table.c.execution_id.in_(ids[start:start + _CHUNK]), table.c.expires_at > now,
                ).values(expires_at=now + MARKER_TTL_SECONDS))

    def clear(self, execution_id: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(sa.delete(execution_inflight).where(execution_inflight.c.execution_id == execution_id))


def open_inflight_store(redis_url: str | None, engine: sa.Engine) -> InflightStore:
    """Redis when a URL is configured (Trinity), else the SQL table beside the executions."""
    if redis_url:
        return RedisInflight.from_url(redis_url)
    return SqlInflight(engine)
