"""The exporter and Trinity as it is today: in-flight dispatches, recently-completed runs,
soft-deleted agents, Trinity's names, a read-only database, and a Trinity database without Redis.

Real parts: SQLite and PostgreSQL, Redis, simulated agents running real processes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from exec_watchdog.common.contract import ExporterMetric as m
from exec_watchdog.common.flags import ConfigError
from exec_watchdog.exporter.gather import Gatherer, poll_client
from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.inflight import RedisInflight, SqlInflight
from exec_watchdog.platform_access.schema import agent_ownership, metadata
from exec_watchdog.platform_access.slots import RedisSlots, SqlSlots, require_store_at, slot_metadata
from exec_watchdog.simulated_platform.agent_server import AgentServer, serve_agents
from exec_watchdog.simulated_platform.process_registry import RunResult
from exec_watchdog.testbed.platform_rows import insert_agent, insert_execution
from exec_watchdog.testbed.servers import free_port
from tests.exposition_oracle import ExecWatchdogCollector

SECRET = "exporter-trinity-secret"


@pytest.fixture
async def agents() -> AsyncIterator[AgentServer]:
    server = await serve_agents(["a1", "gamma_ops", "ops.v2"], SECRET)
    yield server
    await server.stop()


async def _scrape(gatherer: Gatherer) -> CollectorRegistry:
    snapshot = await gatherer.gather()
    registry = CollectorRegistry()
    registry.register(ExecWatchdogCollector(lambda: snapshot))
    return registry


async def _gatherer(engine: sa.Engine, agents: AgentServer, **options: Any) -> Gatherer:
    client = poll_client(agents.url_template, SECRET, timeout=5.0, concurrency=10)
    return Gatherer(engine, client, SqlSlots(engine), **options)


def _labels(agent: str, execution_id: str) -> dict[str, str]:
    return {"agent": agent, "execution_id": execution_id, "schedule_id": "__manual__"}


async def _completed(agents: AgentServer, agent: str, execution_id: str) -> None:
    registry = agents.registry(agent)
    await registry.start(execution_id, 0, result=RunResult(synchronous=False))
    deadline = time.monotonic() + 10
    while execution_id not in registry.recently_completed_ids():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_a_live_marker_makes_an_unknown_run_in_flight_not_orphaned(
        engine: sa.Engine, redis_client: redis.Redis, agents: AgentServer) -> None:
    db.create_platform_tables(engine, slot_metadata)
    with engine.begin() as conn:
        for execution_id in ("_parked", "-lost", "done", "running"):
            insert_execution(conn, execution_id, "gamma_ops", age_seconds=120)
    RedisInflight(redis_client).mark("_parked", "gamma_ops", "parked", time.time(), 1)
    await _completed(agents, "gamma_ops", "done")
    await agents.registry("gamma_ops").start("running", 30)
    gatherer = Gatherer(engine, poll_client(agents.url_template, SECRET, timeout=5.0, concurrency=10),
                        RedisSlots(redis_client), inflight=RedisInflight(redis_client))
    registry = await _scrape(gatherer)
    value = registry.get_sample_value
    assert value(m.EXECUTION_AGENT_KNOWN, _labels("gamma_ops", "_parked")) == 0
    assert value(m.EXECUTION_DISPATCH_INFLIGHT, _labels("gamma_ops", "_parked")) == 1
    assert value(m.EXECUTION_DISPATCH_INFLIGHT, _labels("gamma_ops", "-lost")) == 0
    assert value(m.EXECUTION_DISPATCH_INFLIGHT, _labels("gamma_ops", "done")) == 0
    assert value(m.EXECUTION_DISPATCH_INFLIGHT, _labels("gamma_ops", "running")) is None  # not asked
    assert value(m.EXECUTION_RECENTLY_COMPLETED, _labels("gamma_ops", "done")) == 1
    assert value(m.EXECUTION_RECENTLY_COMPLETED, _labels("gamma_ops", "-lost")) == 0
    assert value(m.EXECUTION_RECENTLY_COMPLETED, _labels("gamma_ops", "running")) == 0


async def test_unreadable_markers_hold_only_runs_younger_than_the_bound(
        sqlite_url: str, agents: AgentServer) -> None:
    engine = db.create_engine(sqlite_url)
    db.create_platform_tables(engine, slot_metadata)
    with engine.begin() as conn:
        insert_execution(conn, "young", "a1", age_seconds=500)
        insert_execution(conn, "old", "a1", age_seconds=1_500)
    dead = RedisInflight.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    registry = await _scrape(await _gatherer(engine, agents, inflight=dead, inflight_max_age_seconds=1_000))
    assert registry.get_sample_value(m.EXECUTION_DISPATCH_INFLIGHT, _labels("a1", "young")) == 1
    assert registry.get_sample_value(m.EXECUTION_DISPATCH_INFLIGHT, _labels("a1", "old")) == 0


async def test_the_embedded_default_reads_markers_from_its_table(sqlite_url: str, agents: AgentServer) -> None:
    engine = db.create_engine(sqlite_url)
    db.create_platform_tables(engine, slot_metadata)
    with engine.begin() as conn:
        insert_execution(conn, "queued", "ops.v2", age_seconds=120)
    SqlInflight(engine).mark("queued", "ops.v2", "parked", time.time(), 7)
    registry = await _scrape(await _gatherer(engine, agents, inflight=SqlInflight(engine)))
    assert registry.get_sample_value(m.EXECUTION_DISPATCH_INFLIGHT, _labels("ops.v2", "queued")) == 1


async def test_soft_deleted_agents_are_neither_polled_nor_published(engine: sa.Engine, agents: AgentServer) -> None:
    db.create_platform_tables(engine, slot_metadata)
    with engine.begin() as conn:
        insert_agent(conn, "a1")
        insert_agent(conn, "gone")
        conn.execute(agent_ownership.update().where(agent_ownership.c.agent_name == "gone")
                     .values(deleted_at="2026-11-01T00:00:00.000000Z"))
        insert_execution(conn, "e-gone", "gone", age_seconds=120)
        insert_execution(conn, "e-a1", "a1", age_seconds=120)
    snapshot = await (await _gatherer(engine, agents)).gather()
    assert [a.name for a in snapshot.agents] == ["a1"]
    assert [e.execution_id for e in snapshot.executions] == ["e-a1"]


async def test_a_schedule_timeout_of_zero_means_900_seconds(sqlite_url: str, agents: AgentServer) -> None:
    engine = db.create_engine(sqlite_url)
    db.create_platform_tables(engine, slot_metadata)
    with engine.begin() as conn:
        insert_agent(conn, "a1", timeout_seconds=1_800)
        conn.execute(sa.text("INSERT INTO agent_schedules (id, agent_name, name, timeout_seconds) "
                             "VALUES ('zero', 'a1', 'zero', 0), ('unset', 'a1', 'unset', NULL)"))
        insert_execution(conn, "e-zero", "a1", schedule_id="zero")
        insert_execution(conn, "e-unset", "a1", schedule_id="unset")
    registry = await _scrape(await _gatherer(engine, agents))
    timeout = registry.get_sample_value
    assert timeout(m.EXECUTION_TIMEOUT, {"agent": "a1", "execution_id": "e-zero", "schedule_id": "zero"}) == 900
    assert timeout(m.EXECUTION_TIMEOUT, {"agent": "a1", "execution_id": "e-unset", "schedule_id": "unset"}) == 1_800


def _trinity_sqlite(path: Path) -> None:
    """A database made the way Trinity makes it: plain SQLite, rollback journal, not by us."""
    raw = sa.create_engine(f"sqlite:///{path}")
    metadata.create_all(raw)
    slot_metadata.create_all(raw)
    with raw.begin() as conn:
        insert_execution(conn, "e1", "a1", age_seconds=120)
    raw.dispose()


def _journal_mode(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


async def test_a_read_only_sqlite_url_is_scraped_and_the_file_left_as_it_was(tmp_path: Path,
                                                                           agents: AgentServer) -> None:
    path = tmp_path / "trinity.db"
    _trinity_sqlite(path)
    url = f"sqlite:///file:{path}?mode=ro&uri=true"
    require_store_at(url, None)
    reader = db.create_engine(url)
    snapshot = await (await _gatherer(reader, agents)).gather()
    reader.dispose()
    assert snapshot.database_up and [e.execution_id for e in snapshot.executions] == ["e1"]
    assert _journal_mode(path) == "delete"


def test_a_refused_db_init_leaves_the_journal_mode_alone(tmp_path: Path) -> None:
    path = tmp_path / "trinity.db"
    _trinity_sqlite(path)
    engine = db.create_engine(f"sqlite:///{path}")
    with pytest.raises(db.DatabaseExists):
        db.create_platform_tables(engine, slot_metadata)
    with engine.connect() as conn:  # an ordinary open changes nothing either
        conn.execute(sa.text("SELECT count(*) FROM schedule_executions")).scalar_one()
    engine.dispose()
    assert _journal_mode(path) == "delete"
    fresh = db.create_engine(f"sqlite:///{tmp_path / 'new.db'}")
    db.create_platform_tables(fresh, slot_metadata)  # a database we create is ours: WAL
    fresh.dispose()
    assert _journal_mode(tmp_path / "new.db") == "wal"


def test_the_exporter_flags_accept_a_read_only_uri(tmp_path: Path) -> None:
    from exec_watchdog.exporter.cli import register  # noqa: F401 (the parser is built below)
    from exec_watchdog.exporter.settings import _check_database_url

    path = tmp_path / "trinity.db"
    sqlite3.connect(path).close()
    url = f"sqlite:///file:{path}?mode=ro&uri=true"
    assert _check_database_url(url) == url
    with pytest.raises(ConfigError, match="does not exist"):
        _check_database_url(f"sqlite:///file:{tmp_path / 'missing.db'}?mode=ro&uri=true")


def test_a_trinity_database_without_slot_tables_and_without_redis_is_refused(tmp_path: Path) -> None:
    """Trinity keeps slots and markers in Redis: its database has no agent_slots table."""
    url = f"sqlite:///{tmp_path / 'trinity.db'}"
    engine = db.create_engine(url)
    metadata.create_all(engine)  # Trinity's tables only
    engine.dispose()
    with pytest.raises(ConfigError, match="--redis-url"):
        require_store_at(url, None)
    require_store_at(url, "redis://127.0.0.1:1/0")
