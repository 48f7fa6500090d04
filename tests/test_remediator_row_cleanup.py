"""Skipped rows and the backlog (Trinity's Phase 1c and backlog expiry), re-verified at action time and
written with Trinity's compare-and-set and texts, on SQLite and PostgreSQL with the session's Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from exec_watchdog.platform_access.schema import agent_activities, agent_events
from exec_watchdog.platform_access.timestamps import format_utc, utcnow
from exec_watchdog.remediator import texts
from exec_watchdog.simulated_platform.agent_server import AgentServer
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.platform_rows import insert_activity, insert_subscription
from exec_watchdog.testbed.remediator_harness import Harness, received, remediator, subscriber
from exec_watchdog.testbed.trinity_stream import read_stream

DAY = 86_400


@pytest.fixture
async def harness(database_url: str, redis_url: str, redis_client: redis.Redis,
                  agents: AgentServer) -> AsyncIterator[Harness]:
    async with remediator(database_url, redis_url, agents) as h:
        yield h


async def _decide(h: Harness, *alerts: dict[str, Any]) -> list[dict[str, Any]]:
    response = await h.post(notification(*alerts))
    assert response.status_code == 200, response.text
    verdicts: list[dict[str, Any]] = response.json()["alerts"]
    return verdicts


def _queued(h: Harness, execution_id: str, agent: str, waited_seconds: float, **extra: Any) -> str:
    queued_at = format_utc(utcnow() - timedelta(seconds=waited_seconds))
    h.add_execution(execution_id, agent, status="queued", slot=False, queued_at=queued_at, **extra)
    return queued_at


async def test_a_skipped_row_is_finalized_once_with_trinitys_columns(harness: Harness, redis_url: str) -> None:
    harness.add_execution("s1", "a1", age_seconds=5, status="skipped", slot=False)
    with harness.engine.begin() as conn:
        insert_activity(conn, "act-s1", "a1", "s1")
        insert_subscription(conn, "sub", "a2", "a1")
    events = subscriber(redis_url)
    [verdict] = await _decide(harness, alert("s1", "a1", "finalize_skipped"))
    assert verdict["outcome"] == "recovered", verdict
    row = harness.row("s1")
    assert (row.status, row.error, row.duration_ms) == ("failed", texts.SKIPPED_FINALIZED_TEXT, 0)
    assert row.completed_at == row.started_at  # COALESCE(started_at, now)
    with harness.engine.connect() as conn:  # no activity close, no agent event
        assert conn.execute(sa.select(agent_activities.c.activity_state)).scalar_one() == "started"
        assert conn.execute(sa.select(agent_events)).all() == []
    [event] = received(events)
    assert (event["action"], event["execution_id"], event["reason"]) == (
        "skipped_finalized", "s1", texts.SKIPPED_FINALIZED_TEXT)
    assert [e.payload["execution_id"] for e in read_stream(redis_url)] == ["s1"]
    [again] = await _decide(harness, alert("s1", "a1", "finalize_skipped"))
    assert again["outcome"] == "skipped" and "finalized meanwhile" in again["reason"]
    assert received(events) == [] and len(read_stream(redis_url)) == 1


@pytest.mark.parametrize(("setup", "reason"), [
    ("completed_at set", "completed_at set"),
    ("leased", "lease row"),
    ("running", "status is 'running'"),
    ("other agent", "the row says 'a2'"),
])
async def test_a_skipped_row_that_is_not_ours_to_finalize_is_left_alone(harness: Harness, setup: str,
                                                                        reason: str) -> None:
    extra: dict[str, Any] = {"status": "running" if setup == "running" else "skipped"}
    if setup == "completed_at set":
        extra["completed_at"] = format_utc(utcnow())
    if setup == "leased":
        extra["lease_expires_at"] = format_utc(utcnow() + timedelta(minutes=5))
    harness.add_execution("s1", "a2" if setup == "other agent" else "a1", slot=False, **extra)
    [verdict] = await _decide(harness, alert("s1", "a1", "finalize_skipped"))
    assert verdict["outcome"] == "skipped" and reason in verdict["reason"], verdict
    assert harness.row("s1").status == extra["status"]


async def test_a_queued_row_older_than_a_day_is_expired_with_trinitys_text(harness: Harness) -> None:
    _queued(harness, "q1", "a1", DAY + 60, duration_ms=7)
    [verdict] = await _decide(harness, alert("q1", "a1", "expire_backlog"))
    assert verdict["outcome"] == "recovered", verdict
    row = harness.row("q1")
    assert (row.status, row.error, row.duration_ms) == ("failed", texts.BACKLOG_EXPIRED_TEXT, 7)  # untouched
    assert row.completed_at.endswith("Z")


@pytest.mark.parametrize(("setup", "reason"), [
    ("young", "not expired"),
    ("dispatched", "left the queue meanwhile"),
    ("leased", "lease row"),
])
async def test_a_queued_row_is_expired_only_while_queued_past_the_backlog_age(harness: Harness, setup: str,
                                                                               reason: str) -> None:
    extra: dict[str, Any] = {}
    if setup == "leased":
        extra["lease_expires_at"] = format_utc(utcnow() + timedelta(minutes=5))
    _queued(harness, "q1", "a1", DAY - 60 if setup == "young" else DAY + 60, **extra)
    if setup == "dispatched":
        with harness.engine.begin() as conn:
            conn.execute(sa.text("UPDATE schedule_executions SET status = 'running' WHERE id = 'q1'"))
    [verdict] = await _decide(harness, alert("q1", "a1", "expire_backlog"))
    assert verdict["outcome"] == "skipped" and reason in verdict["reason"], verdict
    assert harness.row("q1").status == ("running" if setup == "dispatched" else "queued")


async def test_a_row_requeued_after_verification_is_not_expired_on_its_old_age(harness: Harness) -> None:
    """The write is guarded on the queued_at that was verified."""
    from exec_watchdog.platform_access import cleanup_rows

    old = _queued(harness, "q1", "a1", DAY + 60)
    with harness.engine.begin() as conn:
        conn.execute(sa.text("UPDATE schedule_executions SET queued_at = :q WHERE id = 'q1'"),
                     {"q": format_utc(utcnow())})
        assert not cleanup_rows.expire_backlog(conn, "q1", old, texts.BACKLOG_EXPIRED_TEXT, utcnow())
    assert harness.row("q1").status == "queued"


async def test_the_backlog_age_is_the_remediators_setting(database_url: str, redis_url: str,
                                                          redis_client: redis.Redis, agents: AgentServer) -> None:
    async with remediator(database_url, redis_url, agents, backlog_max_age_seconds=30) as h:
        _queued(h, "q1", "a1", 45)
        [verdict] = await _decide(h, alert("q1", "a1", "expire_backlog"))
    assert verdict["outcome"] == "recovered", verdict


async def test_dry_run_reports_the_finalization_and_changes_nothing(database_url: str, redis_url: str,
                                                                    redis_client: redis.Redis,
                                                                    agents: AgentServer) -> None:
    async with remediator(database_url, redis_url, agents, dry_run=True) as h:
        h.add_execution("s1", "a1", status="skipped", slot=False)
        [verdict] = await _decide(h, alert("s1", "a1", "finalize_skipped"))
        assert verdict["outcome"] == "would_recover" and "finalize skipped" in verdict["reason"]
        assert h.row("s1").status == "skipped"
    assert read_stream(redis_url) == []
