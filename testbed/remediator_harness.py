"""A remediator wired to real peers for tests and benchmarks: a database, Redis, simulated agents
running real processes. Requests go through the real ASGI app (in process); the app's lifespan really runs."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import redis
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.schema import schedule_executions
from exec_watchdog.platform_access.slots import RedisSlots, slot_metadata
from exec_watchdog.platform_access.timestamps import utcnow
from exec_watchdog.remediator import audit
from exec_watchdog.remediator.app import Config, create_app
from exec_watchdog.remediator.auth import Credentials
from exec_watchdog.remediator.remediate import Settings
from exec_watchdog.simulated_platform.agent_server import AgentServer
from exec_watchdog.testbed.announcements import open_pubsub
from exec_watchdog.testbed.platform_rows import insert_execution

TOKEN = "test-webhook-token"
SECRET = "test-agent-secret"


@dataclass
class Harness:
    engine: sa.Engine
    redis: redis.Redis
    agents: AgentServer
    app: Starlette
    client: httpx.AsyncClient
    config: Config
    registry: CollectorRegistry

    @property
    def slots(self) -> RedisSlots:
        return RedisSlots(self.redis)

    async def post(self, body: Any, *, token: str | None = TOKEN, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.client.post("/api/v1/alerts", json=body, headers=headers, **kwargs)

    def add_execution(self, execution_id: str, agent: str, *, age_seconds: float = 120, slot: bool = True,
                      **extra: Any) -> None:
        with self.engine.begin() as conn:
            insert_execution(conn, execution_id, agent, age_seconds=age_seconds, **extra)
        if slot:
            self.slots.acquire(agent, execution_id, utcnow() - timedelta(seconds=age_seconds), "msg", 3600)

    def row(self, execution_id: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(schedule_executions)
                                .where(schedule_executions.c.id == execution_id)).one()

    def evidence(self, execution_id: str) -> list[tuple[str, dict[str, Any]]]:
        """(outcome, evidence) of every decision about the execution, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(audit.decisions.c.outcome, audit.decisions.c.evidence)
                                .where(audit.decisions.c.execution_id == execution_id)
                                .order_by(audit.decisions.c.id)).all()
        return [(outcome, json.loads(text)) for outcome, text in rows]

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def remediator(database_url: str, redis_url: str, agents: AgentServer, *,
                     alertmanager_urls: tuple[str, ...] = (), **settings: Any) -> AsyncIterator[Harness]:
    """A running remediator app (lifespan entered), its slots and announcements on the given Redis."""
    engine = db.create_engine(database_url)
    if "schedule_executions" not in sa.inspect(engine).get_table_names():
        db.create_platform_tables(engine, slot_metadata)
    config_keys = {"breaker_max_actions", "breaker_window_seconds", "sweep_interval_seconds",
                   "agent_terminate_timeout", "stalled_after_seconds"}
    config = Config(
        database_url=database_url, agent_url_template=agents.url_template, agent_secret=SECRET,
        credentials=Credentials(bearer_token=TOKEN), redis_url=redis_url, announce_redis_url=redis_url,
        announce_channel="trinity:watchdog", alertmanager_urls=alertmanager_urls, agent_timeout=2.0,
        settings=Settings(replica=settings.pop("replica", "test-replica"), min_orphan_age_seconds=60,
                          **{k: v for k, v in settings.items() if k not in config_keys}),
        **{k: v for k, v in settings.items() if k in config_keys},
    )
    registry = CollectorRegistry()
    app = create_app(config, registry)
    client = redis.Redis.from_url(redis_url)
    harness = Harness(engine, client, agents, app, httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                                     base_url="http://remediator"),
                      config, registry)
    try:
        async with app.router.lifespan_context(app):
            yield harness
    finally:
        await harness.client.aclose()
        engine.dispose()
        client.close()


def subscriber(redis_url: str, channel: str = "trinity:watchdog") -> Any:
    pubsub = open_pubsub(redis_url)
    pubsub.subscribe(channel)
    pubsub.get_message(timeout=1)
    return pubsub


def received(pubsub: Any, wait: float = 0.3) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        message = pubsub.get_message(timeout=wait)
        if message is None:
            return out
        if message["type"] == "message":
            out.append(json.loads(message["data"]))
