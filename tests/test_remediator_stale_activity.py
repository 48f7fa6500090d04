"""Trinity's 120-minute activity backstop as a remediation: an activity left ``started`` is failed once,
re-verified on the database's clock (SQLite and PostgreSQL, the session's Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from exec_watchdog.platform_access.schema import agent_activities
from exec_watchdog.remediator import texts
from exec_watchdog.simulated_platform.agent_server import AgentServer
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.platform_rows import insert_activity
from exec_watchdog.testbed.remediator_harness import Harness, remediator
from exec_watchdog.testbed.trinity_stream import read_stream

ACTIVITY = "6f1c0a2e-4b7d-4a51-9a0e-0c9d3f3a2b11"


@pytest.fixture
async def harness(database_url: str, redis_url: str, redis_client: redis.Redis,
                  agents: AgentServer) -> AsyncIterator[Harness]:
    async with remediator(database_url, redis_url, agents) as h:
        yield h


def _alert(agent: str = "a1", activity_id: str = ACTIVITY) -> dict[str, Any]:
    a = alert("", agent, "fail_stale_activity", activity_id=activity_id, activity_type="schedule_start")
    del a["labels"]["execution_id"]
    a["labels"]["alertname"] = "ExecWatchdogActivityStale"
    return a


async def _decide(h: Harness, *alerts: dict[str, Any]) -> list[dict[str, Any]]:
    response = await h.post(notification(*alerts))
    assert response.status_code == 200, response.text
    verdicts: list[dict[str, Any]] = response.json()["alerts"]
    return verdicts


def _activity(h: Harness) -> Any:
    with h.engine.connect() as conn:
        return conn.execute(sa.select(agent_activities).where(agent_activities.c.id == ACTIVITY)).one()


async def test_an_activity_started_over_120_minutes_ago_is_failed_once_with_trinitys_text(
        harness: Harness, redis_url: str) -> None:
    with harness.engine.begin() as conn:
        insert_activity(conn, ACTIVITY, "a1", "e-gone", activity_type="schedule_start", age_seconds=7300)
    [verdict] = await _decide(harness, _alert())
    assert verdict["outcome"] == "recovered", verdict
    act = _activity(harness)
    assert (act.activity_state, act.error, act.duration_ms) == ("failed", texts.STALE_ACTIVITY_TEXT, None)
    assert act.completed_at.endswith("Z")
    [entry] = read_stream(redis_url)
    assert (entry.payload["action"], entry.payload["execution_id"]) == ("activity_failed", ACTIVITY)
    [again] = await _decide(harness, _alert())
    assert again["outcome"] == "skipped" and "closed meanwhile" in again["reason"]
    assert len(read_stream(redis_url)) == 1


@pytest.mark.parametrize(("setup", "reason"), [
    ("young", "not stale"),
    ("completed", "closed meanwhile"),
    ("other agent", "the activity says 'a2'"),
    ("missing", "no such activity"),
])
async def test_an_activity_that_is_not_stale_is_left_alone(harness: Harness, setup: str, reason: str) -> None:
    if setup != "missing":
        with harness.engine.begin() as conn:
            insert_activity(conn, ACTIVITY, "a2" if setup == "other agent" else "a1", None,
                            state="completed" if setup == "completed" else "started",
                            age_seconds=7100 if setup == "young" else 7300)
    [verdict] = await _decide(harness, _alert())
    assert verdict["outcome"] == "skipped" and reason in verdict["reason"], verdict


def test_the_text_follows_the_bound_and_is_trinitys_at_120_minutes() -> None:
    assert texts.stale_activity_text(7200) == texts.STALE_ACTIVITY_TEXT
    assert texts.stale_activity_text(120) == "Marked as failed by cleanup: exceeded 2-minute timeout"
