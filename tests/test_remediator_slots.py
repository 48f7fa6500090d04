"""Expired and leaked capacity slots (Trinity's Phase 3 and its start-up leak sweep), at action time.

Real peers: SQLite and PostgreSQL, Redis with Trinity's slot layout, simulated agents running real
processes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from exec_watchdog.platform_access.inflight import RedisInflight
from exec_watchdog.platform_access.timestamps import utcnow
from exec_watchdog.remediator import closing, story
from exec_watchdog.remediator.audit import recoveries
from exec_watchdog.remediator.texts import (
    SLOT_RECLAIM_ACTIVITY_TEXT,
    slot_expired_text,
    slot_unreachable_text,
)
from exec_watchdog.simulated_platform.agent_server import AgentServer
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.remediator_harness import Harness, received, remediator, subscriber

EXPIRED = "reclaim_expired_slot"
UNREACHABLE = "reclaim_slot_unreachable"
LEAKED = "release_leaked_slot"
OLD = 5000  # seconds: past a 3,600 s timeout + 300


@pytest.fixture
async def harness(database_url: str, redis_url: str, redis_client: redis.Redis,
                  agents: AgentServer) -> AsyncIterator[Harness]:
    async with remediator(database_url, redis_url, agents) as h:
        yield h


def _slot(h: Harness, agent: str, execution_id: str, age_seconds: float, timeout_seconds: int = 3600) -> None:
    h.slots.acquire(agent, execution_id, utcnow() - timedelta(seconds=age_seconds), "msg", timeout_seconds)


def _held(h: Harness, agent: str, execution_id: str) -> bool:
    return h.redis.zscore(f"agent:slots:{agent}", execution_id) is not None or bool(
        h.redis.exists(f"agent:slot:{agent}:{execution_id}"))


async def _decide(h: Harness, *alerts: dict[str, Any]) -> list[dict[str, Any]]:
    response = await h.post(notification(*alerts))
    verdicts: list[dict[str, Any]] = response.json()["alerts"]
    return verdicts


async def test_an_expired_slot_whose_run_nobody_holds_is_terminated_failed_and_released_once(
        harness: Harness, redis_url: str) -> None:
    harness.add_execution("e-exp", "a1", age_seconds=OLD)
    _slot(harness, "a1", "e-other", 10)
    events = subscriber(redis_url)
    [verdict] = await _decide(harness, alert("e-exp", "a1", EXPIRED))
    assert verdict["outcome"] == "recovered", verdict
    row = harness.row("e-exp")
    assert (row.status, row.error, row.duration_ms) == ("failed", slot_expired_text("a1"), None)
    assert row.error == ("lease_expired: Stale execution — slot TTL expired for agent 'a1', cleaned by cleanup "
                         "service")
    assert not _held(harness, "a1", "e-exp") and _held(harness, "a1", "e-other")
    [event] = received(events)
    assert (event["action"], event["execution_id"]) == ("slot_reclaimed", "e-exp")
    [(_, evidence)] = harness.evidence("e-exp")
    assert evidence["slot"]["held"] and evidence["slot"]["ttl_seconds"] == 3900
    assert evidence["terminate"]["answer"] == "not_found"  # best effort: the agent did not have it
    again = await _decide(harness, alert("e-exp", "a1", EXPIRED))
    assert again[0]["outcome"] == "skipped" and received(events) == []


async def test_a_slot_within_its_ttl_is_left_alone(harness: Harness) -> None:
    """Expired means now - score > hash timeout + 300: a slot 3,800 s old with a 3,600 s timeout is not."""
    harness.add_execution("e-young", "a1", age_seconds=3800)
    [verdict] = await _decide(harness, alert("e-young", "a1", EXPIRED))
    assert verdict["outcome"] == "skipped" and "not expired" in verdict["reason"]
    assert harness.row("e-young").status == "running" and _held(harness, "a1", "e-young")


async def test_an_expired_slot_without_its_hash_uses_the_agents_timeout(harness: Harness) -> None:
    """No hash: the agent's timeout + 300, else 1,200 s (an agent without an agent_ownership row)."""
    harness.add_execution("e-nohash", "a1", age_seconds=1300)
    harness.redis.delete("agent:slot:a1:e-nohash")
    [verdict] = await _decide(harness, alert("e-nohash", "a1", EXPIRED))
    assert verdict["outcome"] == "recovered", verdict
    assert not _held(harness, "a1", "e-nohash")


async def test_a_run_the_agent_still_lists_keeps_running_and_only_its_slot_is_removed_unannounced(
        harness: Harness, agents: AgentServer, redis_url: str) -> None:
    """As Trinity: the row is left, so nothing is announced; the run's own end is its one recovery."""
    harness.add_execution("e-live", "a1", age_seconds=OLD)
    await agents.registry("a1").start("e-live", 30)
    events = subscriber(redis_url)
    verdicts = await asyncio.gather(*(_decide(harness, alert("e-live", "a1", EXPIRED)) for _ in range(3)))
    outcomes = sorted(v[0]["outcome"] for v in verdicts)
    assert outcomes.count("recovered") == 1, verdicts
    [verdict] = [v[0] for v in verdicts if v[0]["outcome"] == "recovered"]
    assert "still lists the run" in verdict["reason"]
    assert harness.row("e-live").status == "running"
    assert not _held(harness, "a1", "e-live")
    assert received(events) == []
    with harness.engine.connect() as conn:
        assert conn.execute(sa.select(recoveries).where(recoveries.c.execution_id == "e-live")).first() is None
    assert "e-live" in {r.execution_id for r in agents.registry("a1").running()}


async def test_a_run_a_backend_dispatcher_holds_keeps_running_and_only_its_slot_is_removed(
        harness: Harness, redis_client: redis.Redis) -> None:
    harness.add_execution("e-parked", "a1", age_seconds=OLD)
    RedisInflight(redis_client).mark("e-parked", "a1", "queued", time.time() - 100, 4242)
    [verdict] = await _decide(harness, alert("e-parked", "a1", EXPIRED))
    assert verdict["outcome"] == "recovered" and "in-flight marker alive" in verdict["reason"], verdict
    assert harness.row("e-parked").status == "running" and not _held(harness, "a1", "e-parked")


@pytest.mark.parametrize("fault", ["down", "hang"])
async def test_an_unreachable_agent_fails_the_run_only_on_the_unreachable_remediation(
        harness: Harness, agents: AgentServer, fault: str) -> None:
    """Trinity fails on one unanswered call; the plain expiry alert leaves it to the alert that waited."""
    harness.add_execution("e-gone", "a2", age_seconds=OLD)
    agents.agents["a2"].set_fault(fault)  # type: ignore[arg-type]
    [plain] = await _decide(harness, alert("e-gone", "a2", EXPIRED))
    assert plain["outcome"] == "skipped", plain
    assert harness.row("e-gone").status == "running" and _held(harness, "a2", "e-gone")
    [verdict] = await _decide(harness, alert("e-gone", "a2", UNREACHABLE))
    assert verdict["outcome"] == "recovered", verdict
    row = harness.row("e-gone")
    assert (row.status, row.error) == ("failed", slot_unreachable_text("a2"))
    assert row.error == ("lease_expired: Stale execution — agent 'a2' unresponsive during cleanup re-verify, "
                         "slot TTL expired (#497)")
    assert not _held(harness, "a2", "e-gone")


async def test_an_unreachable_remediation_whose_agent_answers_again_takes_the_reachable_order(
        harness: Harness, agents: AgentServer) -> None:
    harness.add_execution("e-back", "a2", age_seconds=OLD)
    await agents.registry("a2").start("e-back", 30)
    [verdict] = await _decide(harness, alert("e-back", "a2", UNREACHABLE))
    assert verdict["outcome"] == "recovered" and "still lists the run" in verdict["reason"], verdict
    assert harness.row("e-back").status == "running"


@pytest.mark.parametrize("remediation", [EXPIRED, UNREACHABLE, LEAKED])
async def test_nothing_is_touched_while_governor_pause_exists(harness: Harness, remediation: str) -> None:
    harness.add_execution("e-pause", "a1", age_seconds=OLD, status="success" if remediation == LEAKED else "running")
    harness.redis.set("governor:pause", "1")
    [verdict] = await _decide(harness, alert("e-pause", "a1", remediation))
    assert verdict["outcome"] == "skipped" and "governor:pause" in verdict["reason"]
    assert _held(harness, "a1", "e-pause")


@pytest.mark.parametrize("status", ["success", "failed", "cancelled", "skipped", None])
async def test_a_leaked_slot_is_released_exactly_that_member_and_its_hash(
        harness: Harness, redis_url: str, status: str | None) -> None:
    if status is None:
        _slot(harness, "a1", "e-leak", 60)  # no row at all
    else:
        harness.add_execution("e-leak", "a1", age_seconds=60, status=status)
    _slot(harness, "a1", "e-keep", 60)
    _slot(harness, "a1", "drain-1", 60)
    events = subscriber(redis_url)
    [verdict] = await _decide(harness, alert("e-leak", "a1", LEAKED))
    assert verdict["outcome"] == "recovered", verdict
    assert not _held(harness, "a1", "e-leak")
    assert _held(harness, "a1", "e-keep") and _held(harness, "a1", "drain-1")
    if status is not None:
        assert harness.row("e-leak").status == status  # no row is touched
    [event] = received(events)
    assert (event["action"], event["execution_id"]) == ("slot_released", "e-leak")
    [(outcome, evidence)] = harness.evidence("e-leak")
    assert outcome == "recovered" and evidence["slot"]["held"]


@pytest.mark.parametrize("status", ["running", "queued", "pending_retry"])
async def test_a_slot_of_a_live_or_waiting_row_is_never_released_as_leaked(harness: Harness, status: str) -> None:
    harness.add_execution("e-live", "a1", age_seconds=60, status=status)
    [verdict] = await _decide(harness, alert("e-live", "a1", LEAKED))
    assert verdict["outcome"] == "skipped" and "not a leak" in verdict["reason"]
    assert _held(harness, "a1", "e-live")


async def test_a_slot_younger_than_15_seconds_and_a_drain_placeholder_are_never_released(harness: Harness) -> None:
    _slot(harness, "a1", "e-new", 5)
    _slot(harness, "a1", "drain-7", 600)
    verdicts = await _decide(harness, alert("e-new", "a1", LEAKED), alert("drain-7", "a1", LEAKED))
    assert [v["outcome"] for v in verdicts] == ["skipped", "skipped"], verdicts
    assert _held(harness, "a1", "e-new") and _held(harness, "a1", "drain-7")


async def test_duplicate_deliveries_release_a_leaked_slot_and_announce_it_once(
        harness: Harness, redis_url: str) -> None:
    harness.add_execution("e-dup", "a1", age_seconds=60, status="success")
    events = subscriber(redis_url)
    results = await asyncio.gather(*(_decide(harness, alert("e-dup", "a1", LEAKED)) for _ in range(4)))
    outcomes = sorted(r[0]["outcome"] for r in results)
    assert outcomes.count("recovered") == 1, outcomes
    assert len(received(events)) == 1 and not _held(harness, "a1", "e-dup")


async def test_dry_run_reports_a_slot_reclaim_and_changes_nothing(
        database_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    async with remediator(database_url, redis_url, agents, dry_run=True) as h:
        h.add_execution("e-dry", "a1", age_seconds=OLD)
        h.add_execution("e-dry-leak", "a1", age_seconds=60, status="failed")
        verdicts = await _decide(h, alert("e-dry", "a1", EXPIRED), alert("e-dry-leak", "a1", LEAKED))
        assert [v["outcome"] for v in verdicts] == ["would_recover", "would_recover"], verdicts
        assert h.row("e-dry").status == "running"
        assert _held(h, "a1", "e-dry") and _held(h, "a1", "e-dry-leak")


def test_the_activity_close_text_after_a_slot_reclaim_is_trinitys() -> None:
    assert SLOT_RECLAIM_ACTIVITY_TEXT == "lease_expired: slot lease expired (no result callback)"
    assert closing.rule_for(EXPIRED) == closing.rule_for(UNREACHABLE) == closing.SLOT_RECLAIM
    assert closing.rule_for(LEAKED).mode == "none"  # a leak release closes no activity


async def test_explain_tells_the_story_of_a_leak_release_with_the_slot_it_read(harness: Harness) -> None:
    harness.add_execution("e-told", "a1", age_seconds=60, status="cancelled")
    [verdict] = await _decide(harness, alert("e-told", "a1", LEAKED))
    assert verdict["outcome"] == "recovered"
    with harness.engine.connect() as conn:
        told = story.load(conn, "e-told")
    assert told is not None
    text = json.dumps(told)
    assert "capacity slot: acquired at" in text and "TTL 3900" in text
    assert "slot released, no row changed (release_leaked_slot)" in text
