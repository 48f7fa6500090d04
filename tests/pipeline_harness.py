"""The whole pipeline for end-to-end tests: simulated platform, exporter, remediator(s), real
Prometheus and Alertmanager(s), and what a test needs to watch it.

The simulated platform runs on an event loop in a background thread (its agents must answer while
a test blocks); the watchdog runs as child processes (:class:`pipeline.stack.Stack`). Tests are
synchronous and wait with :func:`exec_watchdog.testbed.waiting.eventually`, never with fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import sqlalchemy as sa
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from exec_watchdog.pipeline.platform import Platform, PlatformOptions
from exec_watchdog.pipeline.stack import Stack, StackOptions
from exec_watchdog.pipeline.timing import Timing
from exec_watchdog.platform_access.schema import agent_schedules, schedule_executions
from exec_watchdog.platform_access.timestamps import utcnow
from exec_watchdog.remediator.audit import recoveries
from exec_watchdog.simulated_platform.scheduler import Fault, Started
from exec_watchdog.testbed.announcements import CHANNEL, open_pubsub
from exec_watchdog.testbed.waiting import eventually

T = TypeVar("T")


class LoopThread:
    """An event loop in a daemon thread; :meth:`call` runs a function (sync or async) on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="simulated-platform", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
        """Await ``fn()`` on the loop."""
        async def run() -> T:
            return await fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def do(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Call a plain function on the loop (the registries belong to it)."""
        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class EventFeed:
    """Every event each remediator broadcasts on its WebSocket, collected by one thread per replica."""

    def __init__(self, remediator_urls: list[str], token: str) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = []
        for url in remediator_urls:
            ws = connect(url.replace("http://", "ws://") + f"/api/v1/events?access_token={token}", open_timeout=10)
            thread = threading.Thread(target=self._read, args=(url, ws), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _read(self, url: str, ws: Any) -> None:
        with ws:
            while not self._stop.is_set():
                try:
                    message = ws.recv(timeout=0.2)
                except TimeoutError:
                    continue
                except WebSocketException as exc:
                    if not self._stop.is_set():
                        self.errors.append(f"{url}: {exc!r}")
                    return
                with self._lock:
                    self.events.append((url, json.loads(message)))

    def for_execution(self, execution_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for _, e in self.events if e.get("execution_id") == execution_id]

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)


class RedisFeed:
    """Every message published on the announcement channel since subscribing."""

    def __init__(self, url: str) -> None:
        self._pubsub = open_pubsub(url)
        self._pubsub.subscribe(CHANNEL)
        eventually(lambda: self._pubsub.get_message(timeout=0.5), 5, "subscribed to the announcement channel")
        self.messages: list[dict[str, Any]] = []

    def for_execution(self, execution_id: str) -> list[dict[str, Any]]:
        while (message := self._pubsub.get_message(timeout=0.05)) is not None:
            if message["type"] == "message":
                self.messages.append(json.loads(message["data"]))
        return [m for m in self.messages if m.get("execution_id") == execution_id]

    def close(self) -> None:
        self._pubsub.close()


@dataclass
class Pipeline:
    loop: LoopThread
    platform: Platform
    stack: Stack
    feed: EventFeed
    timing: Timing
    redis_feed: RedisFeed | None = None
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10.0))

    # -- the platform ---------------------------------------------------------------------------

    @property
    def engine(self) -> sa.Engine:
        return self.platform.engine

    @property
    def completed_window(self) -> float:
        return self.platform.options.completed_window

    def start(self, agent: str, seconds: float, fault: Fault = "none") -> Started:
        return self.loop.call(lambda: self.platform.scheduler.start(agent, seconds, fault))

    def restart_agent(self, agent: str) -> None:
        self.loop.do(lambda: self.platform.scheduler.restart_agent(agent))

    def stop_agent(self, agent: str) -> None:
        self.loop.do(lambda: self.platform.scheduler.stop_agent(agent))

    def resume_agent(self, agent: str) -> None:
        self.loop.do(lambda: self.platform.scheduler.resume_agent(agent))

    def remove_agent(self, agent: str) -> None:
        self.loop.do(lambda: self.platform.scheduler.remove_agent(agent))

    def partition(self) -> None:
        self.loop.do(self.platform.scheduler.partition)

    def heal(self) -> None:
        self.loop.do(self.platform.scheduler.heal)

    def pid(self, execution_id: str, agent: str) -> int | None:
        status = self.loop.do(lambda: self.platform.server.registry(agent).status(execution_id))
        return status.pid if status is not None else None

    def set_timeout(self, agent: str, seconds: int) -> None:
        """The timeout of the agent's simulated schedule (the exporter reads it every scrape)."""
        with self.engine.begin() as conn:
            conn.execute(sa.update(agent_schedules).where(agent_schedules.c.agent_name == agent)
                         .values(timeout_seconds=seconds))

    def row(self, execution_id: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(schedule_executions)
                                .where(schedule_executions.c.id == execution_id)).one()

    def status(self, execution_id: str) -> str:
        return str(self.row(execution_id).status)

    def failed(self, execution_id: str) -> Any:
        row = self.row(execution_id)
        return row if row.status == "failed" else None

    def recovery(self, execution_id: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(recoveries).where(recoveries.c.execution_id == execution_id)).first()

    def sigints(self, execution_id: str, agent: str) -> int:
        """SIGINTs the agent sent to the execution's process group: more than one is a double terminate."""
        return self.loop.do(lambda: self.platform.server.registry(agent).sigints.get(execution_id, 0))

    def held(self, agent: str) -> set[str]:
        return self.platform.slots.held(agent)

    def fault_at(self, execution_id: str) -> Any:
        return self.platform.scheduler.fault_at.get(execution_id)

    # -- the watchdog ---------------------------------------------------------------------------

    def decisions(self, execution_id: str) -> list[dict[str, Any]]:
        """The remediator's audit trail for one execution (through its API, oldest first)."""
        response = self.http.get(f"{self.stack.remediator_urls[0]}/api/v1/audit",
                                 params={"execution_id": execution_id, "limit": 1000},
                                 headers={"Authorization": f"Bearer {self.stack.token}"})
        response.raise_for_status()
        return list(reversed(response.json()["decisions"]))

    def alerts(self, alertname: str, url: str | None = None, **labels: str) -> list[dict[str, Any]]:
        """Alertmanager's alerts (active, silenced and inhibited) with this name and labels."""
        response = self.http.get(f"{url or self.stack.alertmanager_urls[0]}/api/v2/alerts")
        response.raise_for_status()
        wanted = {"alertname": alertname, **labels}
        return [a for a in response.json() if all(a["labels"].get(k) == v for k, v in wanted.items())]

    def query(self, expr: str, prometheus_url: str | None = None) -> dict[str, Any]:
        """Prometheus' whole answer to an instant query (the first Prometheus unless told)."""
        response = self.http.get(f"{prometheus_url or self.stack.prometheus_url}/api/v1/query", params={"query": expr})
        body: dict[str, Any] = response.json()
        return body

    def series(self, expr: str, prometheus_url: str | None = None) -> list[dict[str, Any]]:
        body = self.query(expr, prometheus_url)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def create_silence(self, comment: str, minutes: float = 10, **regex_matchers: str) -> str:
        now = utcnow()
        body = {
            "matchers": [{"name": k, "value": v, "isRegex": True, "isEqual": True} for k, v in regex_matchers.items()],
            "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=minutes)).isoformat(),
            "createdBy": "tests/test_e2e.py", "comment": comment,
        }
        response = self.http.post(f"{self.stack.alertmanager_urls[0]}/api/v2/silences", json=body)
        response.raise_for_status()
        return str(response.json()["silenceID"])

    def delete_silence(self, silence_id: str) -> None:
        response = self.http.delete(f"{self.stack.alertmanager_urls[0]}/api/v2/silence/{silence_id}")
        assert response.status_code in (200, 404), response.text

    def announcements(self, execution_id: str) -> list[dict[str, Any]]:
        return self.feed.for_execution(execution_id)


@contextlib.contextmanager
def running_pipeline(workdir: Path, database_url: str, *, redis_url: str | None = None, agents: int = 8,
                     alertmanagers: int = 1, remediators: int = 1, completed_window: float = 4.0,
                     timeout_seconds: int = 300, agent_timeout_seconds: int = 3600,
                     remediator_flags: tuple[str, ...] = (),
                     exporter_flags: tuple[str, ...] = (), remediation_group_interval: str | None = None,
                     exporter_shards: int = 1, prometheus_replicas: int = 1) -> Iterator[Pipeline]:
    """Start everything, wait until alerts can flow end to end, and always stop everything."""
    loop = LoopThread()
    platform: Platform | None = None
    stack: Stack | None = None
    feed: EventFeed | None = None
    redis_feed: RedisFeed | None = None
    try:
        options = PlatformOptions(database_url=database_url, agents=agents, redis_url=redis_url,
                                  timeout_seconds=timeout_seconds, completed_window=completed_window,
                                  agent_timeout_seconds=agent_timeout_seconds,
                                  late_report_seconds=completed_window / 2)
        platform = loop.call(lambda: Platform.start(options))
        stack = Stack(StackOptions(database_url, platform.url_template, options.agent_secret, redis_url=redis_url,
                                   alertmanagers=alertmanagers, remediators=remediators,
                                   remediator_flags=remediator_flags, exporter_flags=exporter_flags,
                                   remediation_group_interval=remediation_group_interval,
                                   exporter_shards=exporter_shards, prometheus_replicas=prometheus_replicas),
                      workdir)
        stack.start()
        stack.wait_ready()
        feed = EventFeed(stack.remediator_urls, stack.token)
        redis_feed = RedisFeed(redis_url) if redis_url else None
        yield Pipeline(loop, platform, stack, feed, Timing.of("fast"), redis_feed)
    finally:
        for close in (feed and feed.close, redis_feed and redis_feed.close, stack and stack.stop):
            if close:
                with contextlib.suppress(Exception):
                    close()
        if platform is not None:
            running = platform
            with contextlib.suppress(Exception):
                loop.call(running.stop)
        loop.close()
