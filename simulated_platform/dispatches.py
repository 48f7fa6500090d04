"""The simulated backend's in-flight dispatch registry: who still holds which run (Trinity #2433).

Trinity's backend registers every outbound agent call for its whole lifetime (the queue wait, the
connect retries, and a synchronous call until the agent answers) and one refresher task per
process writes ``execution:inflight:{id}`` for each of them: every ``tick`` seconds (Trinity: 15),
only for calls at least ``grace`` seconds old (Trinity: 5), TTL 60 s, phase ``parked`` while
queued and ``calling`` once the request is out. Ending a call only queues the marker's delete,
which the next tick flushes; a dispatcher that dies (:meth:`Dispatches.abandon`) deletes nothing
and its marker lapses with the TTL. The refresher is the only writer, it runs only while there is
something to write, and a store that fails is skipped until the next tick (markers lapse, as in
Trinity: fail open).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import anyio.to_thread
import redis
import sqlalchemy as sa
import structlog

from exec_watchdog.platform_access.inflight import REFRESH_SECONDS, InflightStore

GRACE_SECONDS = 5.0  # Trinity's INFLIGHT_MARKER_GRACE_SECONDS: a fast dispatch never touches Redis
log = structlog.get_logger("exec_watchdog.simulate")


@dataclass(slots=True)
class Dispatch:
    agent: str
    registered_at: float  # monotonic
    since: float  # wall clock, for the marker
    phase: str = "parked"


class Dispatches:
    def __init__(self, store: InflightStore, *, tick: float = REFRESH_SECONDS, grace: float = GRACE_SECONDS) -> None:
        if not (tick > 0 and grace >= 0):
            raise ValueError(f"the marker tick must be > 0 and the grace >= 0, got {tick!r} and {grace!r}")
        self.store, self.tick, self.grace = store, tick, grace
        self.live: dict[str, Dispatch] = {}
        self.failed_ticks = 0
        self._failing = False  # in a store outage: logged once, when it starts and when it ends
        self._deletes: set[str] = set()
        self._written: dict[str, str] = {}  # id -> phase its marker was written with
        self._refresher: asyncio.Task[None] | None = None

    def register(self, execution_id: str, agent: str) -> None:
        self.live[execution_id] = Dispatch(agent, time.monotonic(), time.time())
        self._deletes.discard(execution_id)
        self._ensure_refresher()

    def calling(self, execution_id: str) -> None:
        """The request is out: the agent will know the run from now on."""
        if execution_id in self.live:
            self.live[execution_id].phase = "calling"

    def end(self, execution_id: str) -> None:
        """The call returned (or failed): its marker goes at the next tick."""
        if self.live.pop(execution_id, None) is not None:
            self._deletes.add(execution_id)
            self._ensure_refresher()

    def abandon(self, execution_id: str) -> None:
        """The dispatcher died with the call: nothing deletes its marker; it lapses with the TTL."""
        self.live.pop(execution_id, None)
        self._written.pop(execution_id, None)

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)

    def _ensure_refresher(self) -> None:
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        while self.live or self._deletes:
            await asyncio.sleep(self.tick)
            now = time.monotonic()
            due = {i: (d.agent, d.phase, d.since) for i, d in self.live.items() if now - d.registered_at >= self.grace}
            deletes, self._deletes = self._deletes, set()
            if due or deletes:
                await anyio.to_thread.run_sync(self._write, due, deletes)

    def _write(self, due: dict[str, tuple[str, str, float]], deletes: set[str]) -> None:
        try:
            for execution_id in deletes:
                self.store.clear(execution_id)
                self._written.pop(execution_id, None)
            fresh = [i for i, (_, phase, _) in due.items() if self._written.get(i) == phase]
            self.store.refresh(fresh)
            for execution_id, (agent, phase, since) in due.items():
                if self._written.get(execution_id) != phase:
                    self.store.mark(execution_id, agent, phase, since, os.getpid())
                    self._written[execution_id] = phase
        except (redis.RedisError, sa.exc.SQLAlchemyError, OSError) as exc:
            # Markers lapse until the store answers; the next good tick writes every one again.
            self.failed_ticks += 1
            self._written.clear()
            self._deletes |= deletes
            if not self._failing:
                log.warning("inflight_markers_not_written", error=str(exc))
            self._failing = True
            return
        if self._failing:
            log.info("inflight_markers_written_again")
            self._failing = False
