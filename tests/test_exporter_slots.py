"""The exporter publishes the capacity slots that can fire (past 80 % of their TTL, or leaked) and governor:pause.

Real parts: SQLite and PostgreSQL, Redis with Trinity's slot layout and the SQL slot table, simulated agents.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from exec_watchdog.common.contract import ExporterMetric as m
from exec_watchdog.exporter.gather import Gatherer, poll_client
from exec_watchdog.exporter.sharding import parse_shard
from exec_watchdog.platform_access.slots import RedisSlots, SlotStore, SqlSlots
from exec_watchdog.platform_access.timestamps import utcnow
from exec_watchdog.simulated_platform.agent_server import AgentServer, serve_agents
from exec_watchdog.testbed.platform_rows import insert_agent, insert_execution
from tests.exposition_oracle import ExecWatchdogCollector

SECRET = "exporter-slots-secret"


@pytest.fixture
async def agents() -> AsyncIterator[AgentServer]:
    server = await serve_agents(["a1", "a2"], SECRET)
    yield server
    await server.stop()


@pytest.fixture(params=["redis", "sql"])
def store(request: pytest.FixtureRequest, platform: sa.Engine) -> SlotStore:
    if request.param == "redis":
        client: redis.Redis = request.getfixturevalue("redis_client")
        return RedisSlots(client)
    return SqlSlots(platform)


def _acquire(store: SlotStore, agent: str, execution_id: str, age: float, timeout: int = 3600) -> None:
    store.acquire(agent, execution_id, utcnow() - timedelta(seconds=age), "msg", timeout)


async def _scrape(platform: sa.Engine, store: SlotStore, agents: AgentServer, **options: object) -> CollectorRegistry:
    gatherer = Gatherer(platform, poll_client(agents.url_template, SECRET, timeout=5.0, concurrency=10), store,
                        **options)  # type: ignore[arg-type]
    snapshot = await gatherer.gather()
    registry = CollectorRegistry()
    registry.register(ExecWatchdogCollector(lambda: snapshot))
    return registry


def _slot(agent: str, execution_id: str) -> dict[str, str]:
    return {"agent": agent, "execution_id": execution_id}


async def test_only_slots_past_80_percent_of_their_ttl_or_leaked_are_published(
        platform: sa.Engine, store: SlotStore, agents: AgentServer) -> None:
    with platform.begin() as conn:
        insert_agent(conn, "a1", timeout_seconds=600)
        insert_execution(conn, "young", "a1", age_seconds=100)
        insert_execution(conn, "expired", "a1", age_seconds=5000)
        insert_execution(conn, "done", "a1", age_seconds=30, status="success")
        insert_execution(conn, "waiting", "a1", age_seconds=30, status="queued")
    _acquire(store, "a1", "young", 100)
    _acquire(store, "a1", "expired", 5000)
    _acquire(store, "a1", "done", 30)
    _acquire(store, "a1", "gone", 20)  # no row
    _acquire(store, "a1", "waiting", 30)
    _acquire(store, "a1", "drain-1", 9000)
    value = (await _scrape(platform, store, agents)).get_sample_value
    assert value(m.SLOT_AGE, _slot("a1", "young")) is None  # 100 s of a 3,900 s TTL: healthy, not a series
    assert value(m.SLOT_AGE, _slot("a1", "waiting")) is None  # queued: not a leak
    assert value(m.SLOT_AGE, _slot("a1", "drain-1")) is None  # a placeholder: never published
    assert 4990 < (value(m.SLOT_AGE, _slot("a1", "expired")) or 0) < 5100
    assert value(m.SLOT_TTL, _slot("a1", "expired")) == 3900
    assert value(m.SLOT_LEAKED, _slot("a1", "expired")) == 0
    assert value(m.SLOT_LEAKED, _slot("a1", "done")) == 1 and value(m.SLOT_LEAKED, _slot("a1", "gone")) == 1
    assert value(m.SLOTS_PAUSED) == 0
    assert value(m.AGENT_SLOTS_USED, {"agent": "a1"}) == 6


async def test_a_slot_without_its_hash_lives_the_agents_timeout_plus_300_else_1200(
        platform: sa.Engine, redis_client: redis.Redis, agents: AgentServer) -> None:
    store = RedisSlots(redis_client)
    with platform.begin() as conn:
        insert_agent(conn, "a1", timeout_seconds=600)
        insert_execution(conn, "e1", "a1", age_seconds=1000)
        insert_execution(conn, "e2", "a2", age_seconds=1000)
    _acquire(store, "a1", "e1", 1000)
    _acquire(store, "a2", "e2", 1000)
    redis_client.delete("agent:slot:a1:e1", "agent:slot:a2:e2")
    value = (await _scrape(platform, store, agents)).get_sample_value
    assert value(m.SLOT_TTL, _slot("a1", "e1")) == 900
    assert value(m.SLOT_TTL, _slot("a2", "e2")) == 1200


async def test_governor_pause_is_published(platform: sa.Engine, redis_client: redis.Redis,
                                           agents: AgentServer) -> None:
    redis_client.set("governor:pause", "1")
    value = (await _scrape(platform, RedisSlots(redis_client), agents)).get_sample_value
    assert value(m.SLOTS_PAUSED) == 1


async def test_a_shard_publishes_only_its_agents_slots(platform: sa.Engine, redis_client: redis.Redis,
                                                       agents: AgentServer) -> None:
    store = RedisSlots(redis_client)
    for agent in ("a1", "a2"):
        _acquire(store, agent, f"leak-{agent}", 60)
    published = set()
    for index in range(2):
        registry = await _scrape(platform, store, agents, shard=parse_shard(f"{index}/2"))
        published |= {(s.labels["agent"], index) for f in registry.collect() if f.name == m.SLOT_LEAKED
                      for s in f.samples}
    assert sorted(agent for agent, _ in published) == ["a1", "a2"]  # each once, by exactly one shard
