"""The exporter publishes the facts of Trinity's stale and no-session sweeps, and only for the rows
those rules can fire on. Real parts: SQLite and PostgreSQL, simulated agents running real processes.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from exec_watchdog.common.contract import ExporterMetric as m
from exec_watchdog.exporter.gather import Gatherer, poll_client
from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.schema import agent_ownership
from exec_watchdog.platform_access.slots import SqlSlots, slot_metadata
from exec_watchdog.simulated_platform.agent_server import AgentServer, serve_agents
from exec_watchdog.testbed.platform_rows import insert_agent, insert_execution
from tests.exposition_oracle import ExecWatchdogCollector

SECRET = "exporter-cleanup-secret"


@pytest.fixture
async def agents() -> AsyncIterator[AgentServer]:
    server = await serve_agents(["a1", "gone", "stranger"], SECRET)
    yield server
    await server.stop()


async def _scrape(engine: sa.Engine, agents: AgentServer) -> CollectorRegistry:
    gatherer = Gatherer(engine, poll_client(agents.url_template, SECRET, timeout=5.0, concurrency=10),
                        SqlSlots(engine))
    snapshot = await gatherer.gather()
    registry = CollectorRegistry()
    registry.register(ExecWatchdogCollector(lambda: snapshot))
    return registry


def _values(registry: CollectorRegistry) -> Callable[[str, dict[str, str]], float]:
    """A sample's value, NaN when absent (so comparisons type-check and an absent sample fails them)."""
    def value(name: str, labels: dict[str, str]) -> float:
        found = registry.get_sample_value(name, labels)
        return math.nan if found is None else found
    return value


def _labels(agent: str, execution_id: str, **extra: str) -> dict[str, str]:
    return {"agent": agent, "execution_id": execution_id, "schedule_id": "__manual__", **extra}


async def test_stale_overrun_is_published_past_the_agents_own_timeout_and_for_unowned_agents(
        engine: sa.Engine, agents: AgentServer) -> None:
    db.create_platform_tables(engine, slot_metadata)
    with engine.begin() as conn:
        insert_agent(conn, "a1", timeout_seconds=600)
        insert_agent(conn, "gone", timeout_seconds=600)
        conn.execute(agent_ownership.update().where(agent_ownership.c.agent_name == "gone")
                     .values(deleted_at="2026-11-01T00:00:00.000000Z"))
        for execution_id, agent, age in (("inside", "a1", 500), ("past", "a1", 700), ("deleted", "gone", 50),
                                         ("unknown", "stranger", 60), ("leased", "a1", 9000)):
            insert_execution(conn, execution_id, agent, age_seconds=age, claude_session_id="dispatched",
                             lease_expires_at="2099-01-01T00:00:00.000000Z" if execution_id == "leased" else None)
    value = _values(await _scrape(engine, agents))
    assert 99 <= value(m.EXECUTION_STALE_OVERRUN, _labels("a1", "past", window="agent")) <= 130  # 700 - 600
    assert value(m.EXECUTION_STALE_OVERRUN, _labels("gone", "deleted", window="unowned")) >= 50
    assert value(m.EXECUTION_STALE_OVERRUN, _labels("stranger", "unknown", window="unowned")) >= 60
    for execution_id in ("inside", "leased"):
        for window in ("agent", "unowned"):
            assert math.isnan(value(m.EXECUTION_STALE_OVERRUN, _labels("a1", execution_id, window=window)))
    # A soft-deleted agent's row is published here only: no runtime, no presence, no poll.
    assert math.isnan(value(m.EXECUTION_RUNTIME, _labels("gone", "deleted")))
    assert math.isnan(value(m.AGENT_UP, {"agent": "gone"}))


async def test_sessionless_runtime_is_published_only_for_runs_without_a_session(
        engine: sa.Engine, agents: AgentServer) -> None:
    db.create_platform_tables(engine, slot_metadata)
    with engine.begin() as conn:
        insert_agent(conn, "a1", timeout_seconds=600)
        for execution_id, session in (("null", None), ("empty", ""), ("dispatched", "dispatched"),
                                      ("async", "dispatched_async"), ("session", "sess-1")):
            insert_execution(conn, execution_id, "a1", age_seconds=90, claude_session_id=session)
    value = _values(await _scrape(engine, agents))
    for execution_id in ("null", "empty"):
        assert 90 <= value(m.EXECUTION_SESSIONLESS_RUNTIME, _labels("a1", execution_id)) <= 120
    for execution_id in ("dispatched", "async", "session"):
        assert math.isnan(value(m.EXECUTION_SESSIONLESS_RUNTIME, _labels("a1", execution_id)))
        assert math.isnan(value(m.EXECUTION_STALE_OVERRUN, _labels("a1", execution_id, window="agent")))
