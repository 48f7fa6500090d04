"""Re-verify, then act: every branch, against SQLite/PostgreSQL, Redis and simulated agents."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import psutil
import pytest
import redis
import sqlalchemy as sa

from exec_watchdog.common.serving import opened
from exec_watchdog.platform_access.auth import agent_token
from exec_watchdog.platform_access.schema import schedule_executions
from exec_watchdog.platform_access.timestamps import format_utc, utcnow
from exec_watchdog.remediator import audit, texts
from exec_watchdog.remediator.app import State
from exec_watchdog.simulated_platform.agent_server import AgentServer
from exec_watchdog.simulated_platform.process_registry import RegistryConfig
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.platform_rows import insert_agent, insert_schedule
from exec_watchdog.testbed.remediator_harness import SECRET, Harness, received, remediator, subscriber


@pytest.fixture
async def harness(database_url: str, redis_url: str, redis_client: redis.Redis,
                  agents: AgentServer) -> AsyncIterator[Harness]:
    async with remediator(database_url, redis_url, agents) as h:
        yield h


async def _sim(agents: AgentServer, agent: str, path: str, body: dict[str, object]) -> None:
    async with httpx.AsyncClient() as c:
        r = await c.post(agents.agent_url(agent) + path, json=body,
                         headers={"X-Trinity-Agent-Token": agent_token(SECRET, agent)})
        r.raise_for_status()


async def test_orphan_is_failed_released_and_announced_once(harness: Harness, redis_url: str) -> None:
    harness.add_execution("e1", "a1")
    harness.add_execution("e2", "a1")
    events = subscriber(redis_url)
    response = await harness.post(notification(alert("e1", "a1")))
    assert response.status_code == 200, response.text
    assert response.json()["alerts"][0]["outcome"] == "recovered"
    row = harness.row("e1")
    assert row.status == "failed"
    # The agent has /result and no record for it.
    assert row.error == texts.orphan_text("a1", reports_pending=True, no_retained_result=True)
    assert row.completed_at.endswith("Z") and row.duration_ms is None  # Trinity writes NULL on a failure
    assert harness.slots.held("a1") == {"e2"}
    [event] = received(events)
    assert event["type"] == "watchdog_recovery" and event["action"] == "orphan_recovered"
    assert (event["agent_name"], event["execution_id"]) == ("a1", "e1")
    assert set(event) == {"type", "agent_name", "execution_id", "action", "reason", "timestamp"}
    assert harness.row("e2").status == "running"
    assert harness.sample("exec_watchdog_remediator_remediations_total", action="fail_orphan",
                          outcome="recovered") == 1


@pytest.mark.parametrize(("setup", "reason"), [
    ("completed", "completed meanwhile"),
    ("leased", "lease row"),
    ("young", "too young"),
    ("wrong_agent", "the row says 'a2'"),
    ("missing", "no such execution"),
])
async def test_orphan_reverification_refuses(harness: Harness, setup: str, reason: str) -> None:
    extra: dict[str, Any] = {}
    if setup == "completed":
        extra["status"] = "success"
    if setup == "leased":
        extra["lease_expires_at"] = format_utc(utcnow() + timedelta(minutes=5))
    if setup != "missing":
        harness.add_execution("e1", "a2" if setup == "wrong_agent" else "a1",
                              age_seconds=10 if setup == "young" else 120, **extra)
    response = await harness.post(notification(alert("e1", "a1")))
    assert response.status_code == 200
    verdict = response.json()["alerts"][0]
    assert verdict["outcome"] == "skipped" and reason in verdict["reason"]
    if setup != "missing":
        assert harness.row("e1").status == extra.get("status", "running")
        assert harness.slots.used_by_agent() == {"a2" if setup == "wrong_agent" else "a1": 1}


@pytest.mark.parametrize("state", ["running", "pending"])
async def test_orphan_known_to_the_agent_is_left_alone(harness: Harness, agents: AgentServer, state: str) -> None:
    """(A recently completed run is claimed instead: tests/test_remediator_claim.py.)"""
    harness.add_execution("e1", "a1")
    registry = agents.registry("a1")
    if state == "pending":
        registry.config = RegistryConfig(spawn_delay=30)  # accepted, not spawned yet
    await registry.start("e1", 30)
    response = await harness.post(notification(alert("e1", "a1")))
    assert response.json()["alerts"][0]["outcome"] == "skipped"
    assert "agent knows" in response.json()["alerts"][0]["reason"]
    assert harness.row("e1").status == "running"


async def test_overdue_process_is_terminated_then_failed_with_the_trinity_reason(
        harness: Harness, agents: AgentServer, redis_url: str) -> None:
    with harness.engine.begin() as c:
        insert_agent(c, "a1", timeout_seconds=900)
        insert_schedule(c, "s1", "a1", timeout_seconds=60)
    harness.add_execution("e1", "a1", age_seconds=125, schedule_id="s1")
    await agents.registry("a1").start("e1", 600, ignore_sigint=True)
    pid = agents.registry("a1").status("e1").pid  # type: ignore[union-attr]
    assert pid is not None and psutil.pid_exists(pid)
    events = subscriber(redis_url)
    response = await harness.post(notification(alert("e1", "a1", "terminate_overdue")))
    assert response.status_code == 200, response.text
    assert response.json()["alerts"][0]["outcome"] == "recovered"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    row = harness.row("e1")
    assert row.status == "failed"
    assert row.error.endswith("Execution auto-terminated after 2 minutes by watchdog (exceeded timeout of 60s)")
    assert harness.slots.held("a1") == set()
    assert [e["action"] for e in received(events)] == ["auto_terminated"]


async def test_overdue_not_yet_past_its_timeout_is_left_alone(harness: Harness, agents: AgentServer) -> None:
    harness.add_execution("e1", "a1", age_seconds=120)  # default timeout 3600 s
    await agents.registry("a1").start("e1", 600)
    response = await harness.post(notification(alert("e1", "a1", "terminate_overdue")))
    assert "not overdue" in response.json()["alerts"][0]["reason"]
    assert agents.registry("a1").status("e1").returncode is None  # type: ignore[union-attr]


async def test_overdue_already_finished_on_agent_is_left_for_the_orphan_path(harness: Harness) -> None:
    with harness.engine.begin() as c:
        insert_schedule(c, "s1", "a1", timeout_seconds=60)
    harness.add_execution("e1", "a1", age_seconds=125, schedule_id="s1")
    response = await harness.post(notification(alert("e1", "a1", "terminate_overdue")))
    assert response.json()["alerts"][0]["outcome"] == "skipped"
    assert "orphan path" in response.json()["alerts"][0]["reason"]
    assert harness.row("e1").status == "running"


async def test_twenty_concurrent_duplicates_give_one_transition_release_and_announcement(
        harness: Harness, redis_url: str) -> None:
    harness.add_execution("e1", "a1")
    events = subscriber(redis_url)
    responses = await asyncio.gather(*(harness.post(notification(alert("e1", "a1"))) for _ in range(20)))
    outcomes = sorted(r.json()["alerts"][0]["outcome"] for r in responses)
    assert outcomes.count("recovered") == 1, outcomes
    assert set(outcomes) <= {"recovered", "lost_race", "skipped"}
    assert len(received(events)) == 1
    with harness.engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(audit.recoveries)).scalar_one() == 1


async def test_dry_run_verifies_and_records_but_changes_nothing(
        database_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    async with remediator(database_url, redis_url, agents, dry_run=True) as h:
        h.add_execution("e1", "a1")
        events = subscriber(redis_url)
        response = await h.post(notification(alert("e1", "a1")))
        assert response.json()["alerts"][0]["outcome"] == "would_recover"
        assert h.row("e1").status == "running"
        assert h.slots.held("a1") == {"e1"}
        assert received(events) == []


async def test_breaker_trips_then_an_operator_resets_it(
        database_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    async with remediator(database_url, redis_url, agents, breaker_max_actions=2, breaker_window_seconds=600) as h:
        for i in range(4):
            h.add_execution(f"e{i}", "a1")
        response = await h.post(notification(*[alert(f"e{i}", "a1") for i in range(4)]))
        assert response.status_code == 503
        assert [a["outcome"] for a in response.json()["alerts"]] == [
            "recovered", "recovered", "breaker_open", "breaker_open"]
        assert "exec_watchdog_remediator_breaker_open 1.0" in (await h.client.get("/metrics")).text
        assert h.row("e3").status == "running"
        reset = await h.client.post("/api/v1/breaker/reset", headers={"Authorization": "Bearer test-webhook-token"})
        assert reset.status_code == 200
        response = await h.post(notification(alert("e2", "a1"), alert("e3", "a1")))
        assert [a["outcome"] for a in response.json()["alerts"]] == ["recovered", "recovered"]


async def test_slot_release_owed_after_a_redis_outage_is_finished_by_the_sweep(
        sqlite_url: str, agents: AgentServer) -> None:
    from exec_watchdog.testbed.servers import redis_server

    with redis_server() as url:
        # The row (120 s) is past the in-flight bound: unreadable markers cannot hold it.
        async with remediator(sqlite_url, url, agents, claim_ttl_seconds=0.2, sweep_interval_seconds=3600,
                              inflight_max_age_seconds=60) as h:
            h.add_execution("e1", "a1")
            h.redis.config_set("requirepass", "locked-out")  # Redis "down" for our clients
            response = await h.post(notification(alert("e1", "a1")))
            assert response.status_code == 503  # recovered, but release/announce still owed
            assert h.row("e1").status == "failed"
            h.redis.execute_command("AUTH", "locked-out")  # type: ignore[no-untyped-call]
            h.redis.config_set("requirepass", "")
            assert h.slots.held("a1") == {"e1"}
            events = subscriber(url)
            await asyncio.sleep(0.3)
            assert await opened(h.app, State).remediator.finish_unfinished() == 1
            assert h.slots.held("a1") == set()
            assert len(received(events)) == 1
            assert await opened(h.app, State).remediator.finish_unfinished() == 0


async def test_two_replicas_on_one_postgresql_give_exactly_one_recovery_each(
        postgres_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    async with remediator(postgres_url, redis_url, agents, replica="r1") as r1, \
            remediator(postgres_url, redis_url, agents, replica="r2") as r2:
        for i in range(10):
            r1.add_execution(f"e{i}", "a1" if i % 2 else "a2")
        events = subscriber(redis_url)
        body = notification(*[alert(f"e{i}", "a1" if i % 2 else "a2") for i in range(10)])
        responses = await asyncio.gather(*(h.post(body) for h in (r1, r2, r1, r2) for _ in range(3)))
        assert all(r.status_code == 200 for r in responses)
        announced = received(events, wait=0.5)
        assert sorted(e["execution_id"] for e in announced) == sorted(f"e{i}" for i in range(10))
        assert redis_client.keys("agent:slot*") == []
        with r1.engine.connect() as c:
            rows = c.execute(sa.select(schedule_executions.c.status)).scalars().all()
            winners = c.execute(sa.select(audit.decisions.c.replica).where(
                audit.decisions.c.outcome == "recovered")).scalars().all()
        assert rows == ["failed"] * 10 and len(winners) == 10
