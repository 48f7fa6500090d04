"""The fuzz world: the real remediator app (lifespan entered), a real Redis, SQLite or PostgreSQL,
and simulated agents running real processes, served from a background event loop so that
Hypothesis properties are plain functions and one app serves hundreds of examples.

Two of its executions are remediable on purpose (an orphan on a1, an overdue process on a2), so a
fuzzed request that slipped through would visibly act; :meth:`World.snapshot` is everything that
must not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import psutil
import redis
import sqlalchemy as sa

from exec_watchdog.platform_access.schema import schedule_executions
from exec_watchdog.remediator import audit
from exec_watchdog.simulated_platform.agent_server import AgentServer, running_agents
from exec_watchdog.simulated_platform.process_registry import RegistryConfig
from exec_watchdog.testbed.platform_rows import insert_schedule
from exec_watchdog.testbed.remediator_harness import SECRET, TOKEN, Harness, received, remediator, subscriber

T = TypeVar("T")
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}
# The two alerts that would act; every mutation a strategy makes must break them.
ORPHAN = ("fail_orphan", "a1", "e-orphan")
OVERDUE = ("terminate_overdue", "a2", "e-overdue")
REMEDIABLE = {ORPHAN, OVERDUE}


class World:
    """A remediator wired to real peers, served from a background event loop."""

    def __init__(self, database_url: str, redis_url: str) -> None:
        self.database_url, self.redis_url = database_url, redis_url
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fuzz-world", daemon=True)
        self._thread.start()
        self._stack = contextlib.AsyncExitStack()
        try:
            self.call(self._open)
            self._seed()
        except BaseException:
            self.close()
            raise
        self.events = subscriber(redis_url)

    def call(self, factory: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
        async def run() -> T:
            return await factory()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    async def _open(self) -> None:
        config = RegistryConfig(grace_seconds=0.5, kill_wait_seconds=1)
        self.agents: AgentServer = await self._stack.enter_async_context(
            running_agents(["a1", "a2"], SECRET, config=config))
        self.harness: Harness = await self._stack.enter_async_context(
            remediator(self.database_url, self.redis_url, self.agents))
        # A 500 must come back as a response the property can report, not as an exception.
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.harness.app, raise_app_exceptions=False),
                                      base_url="http://remediator")
        self._stack.push_async_callback(self.http.aclose)

    def _seed(self) -> None:
        h = self.harness
        h.redis.flushdb()
        with h.engine.begin() as conn:
            insert_schedule(conn, "s-short", "a2", timeout_seconds=60)
        h.add_execution("e-orphan", "a1", age_seconds=120)  # the agent does not know it: an orphan
        h.add_execution("e-overdue", "a2", age_seconds=125, schedule_id="s-short")  # runs past 60 s
        h.add_execution("e-running", "a1", age_seconds=120)  # known to its agent
        # Hostile values stored in the database: no alert may turn them into a request.
        h.add_execution("e-hostile-agent", "../admin", age_seconds=120)
        h.add_execution("e-at-agent", "a1@evil.example", age_seconds=120)
        h.add_execution("x'; DROP TABLE schedule_executions;--", "a1", age_seconds=120)
        self.call(lambda: self.agents.registry("a2").start("e-overdue", 600))
        self.call(lambda: self.agents.registry("a1").start("e-running", 600))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self._stack.aclose)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        if hasattr(self, "events"):
            self.events.close()

    # -- requests --------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.call(lambda: self.http.request(method, path, **kwargs))

    def post_body(self, body: bytes, headers: dict[str, str | bytes] | None = None) -> httpx.Response:
        return self.request("POST", "/api/v1/alerts", content=body, headers=JSON if headers is None else headers)

    # -- what must never change ------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self.harness.engine.connect() as conn:
            rows = sorted((tuple(r) for r in conn.execute(sa.select(schedule_executions))), key=lambda r: str(r[0]))
            recoveries = [tuple(r) for r in conn.execute(sa.select(audit.recoveries))]
        return {"rows": rows, "recoveries": recoveries, "redis": _redis_state(self.harness.redis),
                "agents": self.call(self._registries)}

    async def _registries(self) -> dict[str, Any]:
        state = {}
        for name in ("a1", "a2"):
            registry = self.agents.registry(name)
            running = sorted((e.execution_id, e.pid, e.pid is not None and psutil.pid_exists(e.pid))
                             for e in registry.running())
            state[name] = (running, sorted(registry.pending_ids()), sorted(registry.recently_completed_ids()))
        return state

    def announcements(self) -> list[dict[str, Any]]:
        return received(self.events, wait=0.05)


def _redis_state(client: redis.Redis) -> dict[bytes, Any]:
    state: dict[bytes, Any] = {}
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == b"zset":
            state[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"hash":
            state[key] = sorted(client.hgetall(key).items())
        elif kind == b"string":
            state[key] = client.get(key)
        else:
            state[key] = kind
    return state


def check_harmless(response: httpx.Response, world: World, before: dict[str, Any]) -> None:
    """Bad input: a clear 4xx, or 200 with every alert ignored or skipped; the world untouched."""
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if response.status_code == 200:
        outcomes = {a["outcome"] for a in body["alerts"]}
        assert outcomes <= {"ignored", "skipped"}, body
    else:
        assert response.status_code in (400, 413, 415), response.text[:300]
        assert body["status"] == "error" and isinstance(body["error"], str) and body["error"]
    assert world.snapshot() == before
