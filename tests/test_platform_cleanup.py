"""The simulated platform's model of Trinity's cleanup cycle (simulated_platform/platform_cleanup.py).

Real peers: SQLite and PostgreSQL, Redis with Trinity's slot and in-flight layout, simulated agents
running real processes. Cycles are run directly (``run_cycle``), never waited for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from exec_watchdog.platform_access.agent_client import AgentClient
from exec_watchdog.platform_access.inflight import RedisInflight
from exec_watchdog.platform_access.run_history import RECOVERED_NOTICE
from exec_watchdog.platform_access.schema import agent_activities, schedule_executions
from exec_watchdog.platform_access.slots import RedisSlots
from exec_watchdog.platform_access.texts import (
    BACKLOG_EXPIRED_TEXT,
    SKIPPED_FINALIZED_TEXT,
    SLOT_RECLAIM_ACTIVITY_TEXT,
    STALE_ACTIVITY_TEXT,
    STALE_SWEEP_ACTIVITY_TEXT,
    orphan_text,
    slot_expired_text,
    slot_unreachable_text,
)
from exec_watchdog.platform_access.timestamps import format_utc, utcnow
from exec_watchdog.simulated_platform.agent_server import AgentServer
from exec_watchdog.simulated_platform.platform_cleanup import PATHS, PlatformCleanup, parse_paths
from exec_watchdog.simulated_platform.process_registry import RunResult
from exec_watchdog.testbed.agent_runs import retained_then_forgotten
from exec_watchdog.testbed.platform_rows import insert_activity, insert_agent, insert_execution, insert_schedule
from exec_watchdog.testbed.remediator_harness import SECRET

SWEEPS = ("stale", "no_session", "skipped", "stale_activities", "backlog", "activities")


@pytest.fixture
def stores(redis_client: redis.Redis) -> Iterator[tuple[RedisSlots, RedisInflight]]:
    yield RedisSlots(redis_client), RedisInflight(redis_client)


@pytest.fixture
async def client(agents: AgentServer) -> AsyncIterator[AgentClient]:
    c = AgentClient(agents.url_template, SECRET, timeout=3.0)
    yield c
    await c.aclose()


def _cleanup(platform: sa.Engine, stores: tuple[RedisSlots, RedisInflight], client: AgentClient,
             **options: Any) -> PlatformCleanup:
    slots, markers = stores
    return PlatformCleanup(platform, slots, markers, client, **options)


def _rows(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {r.id: r for r in conn.execute(sa.select(schedule_executions))}


def _activity(engine: sa.Engine, activity_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.select(agent_activities).where(agent_activities.c.id == activity_id)).one()


def _held(client: redis.Redis, agent: str, execution_id: str) -> bool:
    return client.zscore(f"agent:slots:{agent}", execution_id) is not None


def _sweep_rows(engine: sa.Engine) -> None:
    """One row per sweep to end, and one beside each that its guard must leave alone."""
    now = utcnow()
    with engine.begin() as conn:
        insert_agent(conn, "a1", timeout_seconds=100)  # stale window 100 + 300 = 400 s
        insert_execution(conn, "e-stale", "a1", age_seconds=500, claude_session_id="dispatched")
        insert_execution(conn, "e-fresh", "a1", age_seconds=300, claude_session_id="dispatched")
        insert_execution(conn, "e-leased", "a1", age_seconds=9000,
                         lease_expires_at=format_utc(now + timedelta(seconds=60)))
        insert_execution(conn, "e-gone", "unowned", age_seconds=7300, claude_session_id="s-1")  # flat 120 min
        insert_execution(conn, "e-nosession", "a1", age_seconds=90, claude_session_id="")
        insert_execution(conn, "e-nosession-young", "a1", age_seconds=30)
        insert_execution(conn, "e-cancelled", "a1", age_seconds=9000, status="cancelled")
        insert_execution(conn, "e-skipped", "a1", age_seconds=50, status="skipped")
        insert_execution(conn, "e-queued", "a1", status="queued",
                         queued_at=format_utc(now - timedelta(hours=25)))
        insert_execution(conn, "e-queued-young", "a1", status="queued",
                         queued_at=format_utc(now - timedelta(hours=23)))
        insert_activity(conn, "act-stale", "a1", "e-stale", activity_type="schedule_start", age_seconds=500)
        insert_activity(conn, "act-old", "a1", None, age_seconds=121 * 60)
        insert_activity(conn, "act-young", "a1", None, age_seconds=119 * 60)


async def test_each_sweep_writes_trinitys_text_and_columns_once_and_its_guards_hold(
        platform: sa.Engine, stores: tuple[RedisSlots, RedisInflight], client: AgentClient) -> None:
    _sweep_rows(platform)
    before = _rows(platform)
    cleanup = _cleanup(platform, stores, client, paths=SWEEPS)
    first = await cleanup.run_cycle(startup=True)
    second = await cleanup.run_cycle()
    rows = _rows(platform)

    stale, gone = rows["e-stale"], rows["e-gone"]
    assert (stale.status, stale.error, stale.duration_ms) == (
        "failed", "Marked as failed by cleanup: exceeded 400s stale timeout", None)
    assert gone.error == "Marked as failed by cleanup: exceeded 7200s stale timeout"
    assert stale.completed_at is not None
    nosession = rows["e-nosession"]
    assert (nosession.status, nosession.error, nosession.duration_ms) == (
        "failed", "Silent launch failure: no Claude session created within 60 seconds", None)
    skipped = rows["e-skipped"]
    assert (skipped.status, skipped.error, skipped.duration_ms, skipped.completed_at) == (
        "failed", SKIPPED_FINALIZED_TEXT, 0, before["e-skipped"].started_at)
    queued = rows["e-queued"]
    assert (queued.status, queued.error, queued.duration_ms) == ("failed", BACKLOG_EXPIRED_TEXT, None)
    for untouched in ("e-fresh", "e-leased", "e-nosession-young", "e-cancelled", "e-queued-young"):
        assert rows[untouched] == before[untouched], untouched

    closed = _activity(platform, "act-stale")
    assert (closed.activity_state, closed.error, closed.duration_ms) == ("failed", STALE_SWEEP_ACTIVITY_TEXT, None)
    old = _activity(platform, "act-old")
    assert (old.activity_state, old.error, old.duration_ms) == ("failed", STALE_ACTIVITY_TEXT, None)
    assert _activity(platform, "act-young").activity_state == "started"

    actions = sorted((d.execution_id, d.action) for d in cleanup.decisions)
    assert actions == sorted([("e-stale", "fail_stale"), ("e-gone", "fail_stale"), ("e-nosession", "fail_no_session"),
                              ("e-skipped", "finalize_skipped"), ("e-queued", "expire_backlog"),
                              ("act-old", "fail_stale_activity")])
    assert all(d.written for d in cleanup.decisions)
    assert first.total == 6 and second.total == 0  # each written exactly once


async def test_in_shadow_every_path_records_its_decision_once_and_changes_nothing(
        platform: sa.Engine, stores: tuple[RedisSlots, RedisInflight], client: AgentClient,
        agents: AgentServer, redis_client: redis.Redis) -> None:
    _sweep_rows(platform)
    slots, _ = stores
    with platform.begin() as conn:
        insert_execution(conn, "e-orphan", "a2", age_seconds=120, claude_session_id="dispatched")
        insert_execution(conn, "e-slot", "a2", age_seconds=5000, claude_session_id="dispatched")
        insert_execution(conn, "e-done", "a2", age_seconds=60, status="success")
    slots.acquire("a2", "e-slot", utcnow() - timedelta(seconds=5000), "msg", 3600)
    slots.acquire("a2", "e-done", utcnow() - timedelta(seconds=60), "msg", 3600)
    before_rows, before_slots = _rows(platform), sorted(redis_client.keys("agent:slot*"))
    cleanup = _cleanup(platform, stores, client, shadow=True)
    await cleanup.run_cycle(startup=True)
    await cleanup.run_cycle()
    assert _rows(platform) == before_rows
    assert sorted(redis_client.keys("agent:slot*")) == before_slots
    assert _activity(platform, "act-stale").activity_state == "started"
    actions = sorted((d.execution_id, d.action) for d in cleanup.decisions)
    # A shadow cycle sees every row still running, so a row two paths would end is recorded by both
    # (Phase 0 first: e-stale and e-nosession are also unknown to their agent); the start-up sweep's
    # orphan minimum age is 15 s, so the 30 s old e-nosession-young is an orphan there.
    assert actions == sorted([
        ("e-stale", "fail_stale"), ("e-gone", "fail_stale"), ("e-nosession", "fail_no_session"),
        ("e-skipped", "finalize_skipped"), ("e-queued", "expire_backlog"), ("act-old", "fail_stale_activity"),
        ("e-orphan", "fail_orphan"), ("e-slot", "fail_orphan"), ("e-fresh", "fail_orphan"),
        ("e-slot", "reclaim_expired_slot"), ("e-done", "release_leaked_slot"), ("e-stale", "fail_orphan"),
        ("e-nosession", "fail_orphan"), ("e-nosession-young", "fail_orphan")])
    assert not any(d.written for d in cleanup.decisions)


async def test_the_watchdog_fails_an_orphan_terminates_an_overdue_run_and_leaves_what_it_must(
        platform: sa.Engine, stores: tuple[RedisSlots, RedisInflight], client: AgentClient,
        agents: AgentServer, redis_client: redis.Redis) -> None:
    slots, markers = stores
    await agents.registry("a1").start("e-hung", 3600)
    with platform.begin() as conn:
        insert_schedule(conn, "s-short", "a1", 60)
        insert_execution(conn, "e-hung", "a1", age_seconds=130, schedule_id="s-short")
        insert_execution(conn, "e-orphan", "a1", age_seconds=120)
        insert_execution(conn, "e-young", "a1", age_seconds=30)
        insert_execution(conn, "e-held", "a1", age_seconds=120)
        insert_activity(conn, "act-orphan", "a1", "e-orphan", activity_type="schedule_start", age_seconds=120)
    for execution_id in ("e-hung", "e-orphan", "e-young", "e-held"):
        slots.acquire("a1", execution_id, utcnow(), "msg", 3600)
    markers.mark("e-held", "a1", "queued", utcnow().timestamp(), 1)
    cleanup = _cleanup(platform, stores, client, paths=("watchdog", "activities"))
    report = await cleanup.run_cycle()
    rows = _rows(platform)
    assert rows["e-orphan"].error == orphan_text("a1", reports_pending=True, no_retained_result=True)
    assert rows["e-orphan"].duration_ms is None
    assert rows["e-hung"].status == "failed"
    assert rows["e-hung"].error.endswith("Execution auto-terminated after 2 minutes by watchdog "
                                         "(exceeded timeout of 60s)")
    assert rows["e-young"].status == rows["e-held"].status == "running"
    status = agents.registry("a1").status("e-hung")
    assert status is not None and status.state == "completed"  # the process was ended
    assert not _held(redis_client, "a1", "e-orphan") and not _held(redis_client, "a1", "e-hung")
    assert _held(redis_client, "a1", "e-young") and _held(redis_client, "a1", "e-held")
    activity = _activity(platform, "act-orphan")
    assert (activity.activity_state, activity.error) == ("failed", rows["e-orphan"].error)
    assert report.ended == {"watchdog": 2}
    assert (await cleanup.run_cycle()).total == 0


async def test_the_watchdog_claims_a_retained_result_once_it_is_old_enough(
        platform: sa.Engine, stores: tuple[RedisSlots, RedisInflight], client: AgentClient,
        agents: AgentServer) -> None:
    await retained_then_forgotten(agents.registry("a1"), "e-kept", RunResult(response="the answer"))
    with platform.begin() as conn:
        insert_execution(conn, "e-kept", "a1", age_seconds=120)
    waiting = _cleanup(platform, stores, client, paths=("watchdog",))
    await waiting.run_cycle()
    assert _rows(platform)["e-kept"].status == "running"  # retained < 180 s ago: not claimed yet
    cleanup = _cleanup(platform, stores, client, paths=("watchdog",), claim_defer_seconds=0)
    await cleanup.run_cycle()
    row = _rows(platform)["e-kept"]
    assert row.status == "success" and row.response.startswith(RECOVERED_NOTICE)
    assert [(d.execution_id, d.action) for d in cleanup.decisions] == [("e-kept", "claim_result")]


async def test_the_slot_phase_follows_trinitys_order_and_guards(
        platform: sa.Engine, stores: tuple[RedisSlots, RedisInflight], client: AgentClient,
        agents: AgentServer, redis_client: redis.Redis) -> None:
    slots, markers = stores
    old = utcnow() - timedelta(seconds=5000)
    await agents.registry("a1").start("e-listed", 3600)
    agents.agents["a2"].set_fault("down")
    with platform.begin() as conn:
        for execution_id, agent in (("e-expired", "a1"), ("e-listed", "a1"), ("e-marked", "a1"),
                                    ("e-unreachable", "a2")):
            insert_execution(conn, execution_id, agent, age_seconds=10)
        insert_execution(conn, "e-leased", "a1", age_seconds=10, lease_expires_at=format_utc(utcnow()))
        insert_execution(conn, "e-finished", "a1", age_seconds=60, status="success")
        insert_execution(conn, "e-finished-young", "a1", age_seconds=5, status="failed")
        insert_activity(conn, "act-expired", "a1", "e-expired", activity_type="schedule_start", age_seconds=10)
    for execution_id, agent in (("e-expired", "a1"), ("e-listed", "a1"), ("e-marked", "a1"),
                                ("e-unreachable", "a2"), ("e-leased", "a1")):
        slots.acquire(agent, execution_id, old, "msg", 3600)
    slots.acquire("a1", "drain-1", old, "", 3600)
    slots.acquire("a1", "e-finished", utcnow() - timedelta(seconds=60), "msg", 3600)
    slots.acquire("a1", "e-finished-young", utcnow() - timedelta(seconds=5), "msg", 3600)
    markers.mark("e-marked", "a1", "queued", utcnow().timestamp(), 1)

    redis_client.set("governor:pause", "1")
    paused = _cleanup(platform, stores, client, paths=("slots",))
    assert (await paused.run_cycle(startup=True)).total == 0 and paused.decisions == []
    assert _held(redis_client, "a1", "e-expired")
    redis_client.delete("governor:pause")

    cleanup = _cleanup(platform, stores, client, paths=("slots", "activities"))
    await cleanup.run_cycle(startup=True)
    rows = _rows(platform)
    assert (rows["e-expired"].status, rows["e-expired"].error) == ("failed", slot_expired_text("a1"))
    assert (rows["e-unreachable"].status, rows["e-unreachable"].error) == ("failed", slot_unreachable_text("a2"))
    for kept in ("e-listed", "e-marked", "e-leased"):
        assert rows[kept].status == "running", kept
    activity = _activity(platform, "act-expired")
    assert (activity.activity_state, activity.error) == ("failed", SLOT_RECLAIM_ACTIVITY_TEXT)
    for released in ("e-expired", "e-listed", "e-marked", "e-unreachable", "e-leased", "e-finished"):
        assert not _held(redis_client, "a1" if released != "e-unreachable" else "a2", released), released
    assert _held(redis_client, "a1", "drain-1") and _held(redis_client, "a1", "e-finished-young")
    assert sorted((d.execution_id, d.action) for d in cleanup.decisions) == [
        ("e-expired", "reclaim_expired_slot"), ("e-finished", "release_leaked_slot"),
        ("e-unreachable", "reclaim_slot_unreachable")]


def test_paths_are_named_or_refused() -> None:
    assert parse_paths("all") == frozenset(PATHS)
    assert parse_paths(" stale, slots ") == {"stale", "slots"}
    with pytest.raises(ValueError, match=r"unknown cleanup path.*phase9"):
        parse_paths("stale,phase9")
    with pytest.raises(ValueError, match="none given"):
        parse_paths(" , ")
