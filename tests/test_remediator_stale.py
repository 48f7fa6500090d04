"""Trinity's stale (Phase 1) and no-session (Phase 1b) sweeps at action time, and the fleet guard.

Real peers: SQLite and PostgreSQL, Redis, simulated agents running real processes, and a real
Alertmanager for the fleet guard's re-check.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from exec_watchdog.common import contract
from exec_watchdog.platform_access.schema import agent_ownership
from exec_watchdog.remediator.stale import Windows
from exec_watchdog.remediator.story import describe
from exec_watchdog.simulated_platform.agent_server import AgentServer, serve_agents
from exec_watchdog.simulated_platform.process_registry import RegistryConfig
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.platform_rows import insert_agent
from exec_watchdog.testbed.remediator_harness import SECRET, Harness, received, remediator, subscriber
from exec_watchdog.testbed.servers import alertmanager_server

STALE_TEXT_900 = "Marked as failed by cleanup: exceeded 900s stale timeout"
NO_SESSION_TEXT = "Silent launch failure: no Claude session created within 60 seconds"


@pytest.fixture
async def agents() -> AsyncIterator[AgentServer]:
    server = await serve_agents(["a1", "down", "gone", "b1", "b2"], SECRET,
                                config=RegistryConfig(grace_seconds=0.5, kill_wait_seconds=1))
    server.agents["down"].set_fault("down")
    server.agents["gone"].set_fault("gone")
    yield server
    await server.stop()


@pytest.fixture
async def harness(database_url: str, redis_url: str, redis_client: redis.Redis,
                  agents: AgentServer) -> AsyncIterator[Harness]:
    async with remediator(database_url, redis_url, agents) as h:
        with h.engine.begin() as conn:
            for name in ("a1", "down", "gone"):
                insert_agent(conn, name, timeout_seconds=600)  # stale window 600 + 300 = 900 s
        yield h


def stale(execution_id: str, agent: str) -> dict[str, Any]:
    return alert(execution_id, agent, contract.FAIL_STALE, window="agent")


def no_session(execution_id: str, agent: str) -> dict[str, Any]:
    return alert(execution_id, agent, contract.FAIL_NO_SESSION)


async def _decide(h: Harness, *alerts: dict[str, Any]) -> list[dict[str, Any]]:
    response = await h.post(notification(*alerts))
    verdicts: list[dict[str, Any]] = response.json()["alerts"]
    return verdicts


def _failed_as_trinity_fails(h: Harness, execution_id: str, text: str) -> None:
    row = h.row(execution_id)
    assert (row.status, row.error, row.duration_ms) == ("failed", text, None)
    assert row.completed_at.endswith("Z")


async def test_a_stale_run_its_agent_answered_without_is_failed_with_trinitys_text_exactly_once(
        harness: Harness, redis_url: str) -> None:
    harness.add_execution("e-stale", "a1", age_seconds=1201, claude_session_id="sess-1")  # window + orphan's turn
    events = subscriber(redis_url)
    [verdict] = await _decide(harness, stale("e-stale", "a1"))
    assert verdict["outcome"] == "recovered", verdict
    _failed_as_trinity_fails(harness, "e-stale", STALE_TEXT_900)
    assert harness.slots.held("a1") == set()
    [event] = received(events)
    assert (event["action"], event["execution_id"], event["reason"]) == ("stale_failed", "e-stale", STALE_TEXT_900)
    again = await _decide(harness, stale("e-stale", "a1"))
    assert again[0]["outcome"] == "skipped" and received(events) == []
    [(_, evidence), _] = harness.evidence("e-stale")
    assert evidence["sweep"]["window_seconds"] == 900 and evidence["agent"]["answer"] == "answered"
    assert any(line.startswith("cleanup sweep fail_stale: age 12") and "window of 900 s" in line
               for line in describe(evidence)), describe(evidence)  # what `explain` and the page show


async def test_a_stale_run_its_agent_answers_without_is_the_orphan_paths_first(harness: Harness) -> None:
    """After an outage the agent answers again without the run: its kept result must be claimed (the
    orphan path, as Trinity's cycle runs its watchdog first), not failed stale at once."""
    harness.add_execution("e-turn", "a1", age_seconds=1150, claude_session_id="sess-1")
    [verdict] = await _decide(harness, stale("e-turn", "a1"))
    assert verdict["outcome"] == "skipped" and "orphan path decides it first" in verdict["reason"], verdict
    assert harness.row("e-turn").status == "running"


async def test_a_run_inside_its_stale_window_is_left_running(harness: Harness) -> None:
    harness.add_execution("e-young", "a1", age_seconds=880, claude_session_id="sess-1")
    [verdict] = await _decide(harness, stale("e-young", "a1"))
    assert verdict["outcome"] == "skipped" and "not past its stale window" in verdict["reason"], verdict
    assert harness.row("e-young").status == "running"


async def test_a_stale_run_its_agent_still_runs_is_never_failed_without_being_stopped(
        harness: Harness, agents: AgentServer) -> None:
    """Trinity's sweep would fail it while it executes; ours leaves it to the overdue path (terminate first)."""
    harness.add_execution("e-busy", "a1", age_seconds=2000, claude_session_id="sess-1")
    await agents.registry("a1").start("e-busy", 60)
    [verdict] = await _decide(harness, stale("e-busy", "a1"))
    assert verdict["outcome"] == "skipped" and "overdue path" in verdict["reason"], verdict
    assert harness.row("e-busy").status == "running"
    assert [e.execution_id for e in agents.registry("a1").running()] == ["e-busy"]


@pytest.mark.parametrize("agent", ["down", "gone"])
async def test_a_stale_run_of_an_agent_that_does_not_answer_is_failed(harness: Harness, agent: str) -> None:
    harness.add_execution("e-lost", agent, age_seconds=901, claude_session_id="sess-1")
    [verdict] = await _decide(harness, stale("e-lost", agent))
    assert verdict["outcome"] == "recovered" and "does not answer" not in harness.row("e-lost").error
    _failed_as_trinity_fails(harness, "e-lost", STALE_TEXT_900)


async def test_a_run_of_an_unknown_or_soft_deleted_agent_is_stale_after_the_flat_120_minutes(
        harness: Harness) -> None:
    with harness.engine.begin() as conn:
        conn.execute(agent_ownership.update().where(agent_ownership.c.agent_name == "gone")
                     .values(deleted_at="2026-11-01T00:00:00.000000Z"))
    # b1 answers (without the run): the orphan path's turn first, then the stale sweep's.
    for execution_id, agent, age in (("deleted-young", "gone", 7190), ("deleted-old", "gone", 7210),
                                     ("unknown-young", "b1", 7190), ("unknown-old", "b1", 7510)):
        harness.add_execution(execution_id, agent, age_seconds=age, claude_session_id="sess-1")
    verdicts = await _decide(harness, stale("deleted-young", "gone"), stale("deleted-old", "gone"),
                             stale("unknown-young", "b1"), stale("unknown-old", "b1"))
    assert [v["outcome"] for v in verdicts] == ["skipped", "recovered", "skipped", "recovered"], verdicts
    for execution_id in ("deleted-old", "unknown-old"):
        _failed_as_trinity_fails(harness, execution_id, "Marked as failed by cleanup: exceeded 7200s stale timeout")
    assert harness.row("deleted-young").status == harness.row("unknown-young").status == "running"


async def test_a_sessionless_run_of_an_agent_that_does_not_answer_is_a_silent_launch_failure(
        harness: Harness) -> None:
    harness.add_execution("e-nosess", "down", age_seconds=61)
    harness.add_execution("e-empty", "down", age_seconds=61, claude_session_id="")
    verdicts = await _decide(harness, no_session("e-nosess", "down"), no_session("e-empty", "down"))
    assert [v["outcome"] for v in verdicts] == ["recovered", "recovered"], verdicts
    _failed_as_trinity_fails(harness, "e-nosess", NO_SESSION_TEXT)
    _failed_as_trinity_fails(harness, "e-empty", NO_SESSION_TEXT)


@pytest.mark.parametrize("session", ["dispatched", "dispatched_async", "sess-9"])
async def test_a_run_the_backend_dispatched_or_that_has_a_session_is_no_silent_launch_failure(
        harness: Harness, session: str) -> None:
    harness.add_execution("e-has", "down", age_seconds=600, claude_session_id=session)
    [verdict] = await _decide(harness, no_session("e-has", "down"))
    assert verdict["outcome"] == "skipped" and "session" in verdict["reason"], verdict
    assert harness.row("e-has").status == "running"


async def test_a_sessionless_run_younger_than_60_seconds_is_left_running(harness: Harness) -> None:
    harness.add_execution("e-new", "down", age_seconds=50)
    [verdict] = await _decide(harness, no_session("e-new", "down"))
    assert verdict["outcome"] == "skipped", verdict


async def test_a_sessionless_run_its_agent_answered_without_is_left_to_the_orphan_path(harness: Harness) -> None:
    """Trinity's cycle runs its watchdog first: such a run gets the orphan checks (and text), not this sweep's."""
    harness.add_execution("e-orph", "a1", age_seconds=120)
    [verdict] = await _decide(harness, no_session("e-orph", "a1"))
    assert verdict["outcome"] == "skipped" and "orphan path" in verdict["reason"], verdict
    assert harness.row("e-orph").status == "running"


async def test_a_stale_or_sessionless_lease_row_is_never_touched(harness: Harness) -> None:
    lease = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    harness.add_execution("e-lease", "down", age_seconds=9000, lease_expires_at=lease)
    verdicts = await _decide(harness, stale("e-lease", "down"), no_session("e-lease", "down"))
    assert {v["outcome"] for v in verdicts} == {"skipped"}
    assert harness.row("e-lease").status == "running"


async def test_dry_run_reports_the_stale_failure_and_changes_nothing(
        database_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    async with remediator(database_url, redis_url, agents, dry_run=True) as h:
        h.add_execution("e-dry", "down", age_seconds=9000, claude_session_id="s")
        [verdict] = await _decide(h, stale("e-dry", "down"))
        assert verdict["outcome"] == "would_recover", verdict
        assert h.row("e-dry").status == "running"


@pytest.fixture
def alertmanager() -> Iterator[str]:
    with alertmanager_server() as url:
        yield url


def _fire(alertmanager: str, labels: dict[str, str]) -> None:
    httpx.post(f"{alertmanager}/api/v2/alerts", json=[{"labels": labels, "annotations": {}}]).raise_for_status()


async def test_the_fleet_guard_holds_a_run_of_an_agent_that_does_not_answer_and_only_those(
        database_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer, alertmanager: str) -> None:
    async with remediator(database_url, redis_url, agents, alertmanager_urls=(alertmanager,)) as h:
        with h.engine.begin() as conn:
            for name in ("a1", "down"):
                insert_agent(conn, name, timeout_seconds=600)
        h.add_execution("e-down", "down", age_seconds=901, claude_session_id="s")
        h.add_execution("e-nosess", "down", age_seconds=61)
        h.add_execution("e-answered", "a1", age_seconds=1201, claude_session_id="s")
        _fire(alertmanager, {"alertname": contract.FLEET_UNREACHABLE, "severity": "critical"})
        verdicts = await _decide(h, stale("e-down", "down"), no_session("e-nosess", "down"),
                                 stale("e-answered", "a1"))
        assert [v["outcome"] for v in verdicts] == ["retry", "retry", "recovered"], verdicts
        assert "fleet guard" in verdicts[0]["reason"]
        assert h.row("e-down").status == h.row("e-nosess").status == "running"
        [(_, evidence)] = h.evidence("e-down")
        assert evidence["sweep"]["fleet_guard"].startswith("firing")


async def test_a_stale_run_is_held_when_alertmanager_cannot_say_whether_the_fleet_guard_fires(
        database_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    """The silence check fails first (503), and nothing is failed on an agent's silence meanwhile."""
    async with remediator(database_url, redis_url, agents, alertmanager_urls=("http://127.0.0.1:9",)) as h:
        h.add_execution("e-down", "down", age_seconds=9000, claude_session_id="s")
        response = await h.post(notification(stale("e-down", "down")))
        assert response.status_code == 503
        assert h.row("e-down").status == "running"


def test_the_sweep_windows_refuse_negative_numbers() -> None:
    with pytest.raises(ValueError, match="negative"):
        Windows(stale_grace_seconds=-1)


async def test_a_deleted_agents_row_is_still_not_the_orphan_paths(harness: Harness) -> None:
    with harness.engine.begin() as conn:
        conn.execute(sa.update(agent_ownership).values(deleted_at="2026-11-01T00:00:00.000000Z"))
    harness.add_execution("e-del", "gone", age_seconds=9000)
    [verdict] = await _decide(harness, alert("e-del", "gone"))
    assert verdict["outcome"] == "skipped" and "soft-deleted" in verdict["reason"], verdict
