"""Every won transition closes the run's activity, writes its agent event when someone subscribed,
and puts one entry on Trinity's UI feed (``trinity:events``) — as Trinity's cleanup service does.

Real peers: SQLite and PostgreSQL with Trinity's activity, subscription and event tables, the
session's Redis (channel and stream), simulated agents running real processes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from exec_watchdog.common.serving import opened
from exec_watchdog.platform_access import activities
from exec_watchdog.platform_access.schema import agent_activities, agent_events
from exec_watchdog.platform_access.timestamps import utcnow
from exec_watchdog.remediator import audit, closing, texts
from exec_watchdog.remediator.app import State
from exec_watchdog.simulated_platform.agent_server import AgentServer
from exec_watchdog.simulated_platform.process_registry import RunResult
from exec_watchdog.testbed.agent_runs import retained_then_forgotten
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.platform_rows import insert_activity, insert_execution, insert_subscription
from exec_watchdog.testbed.remediator_harness import Harness, remediator
from exec_watchdog.testbed.trinity_stream import read_stream, recoveries_per_execution


@pytest.fixture
async def harness(database_url: str, redis_url: str, redis_client: redis.Redis,
                  agents: AgentServer) -> AsyncIterator[Harness]:
    async with remediator(database_url, redis_url, agents, claim_defer_seconds=0) as h:
        yield h


def _activity(h: Harness, activity_id: str) -> Any:
    with h.engine.connect() as conn:
        return conn.execute(sa.select(agent_activities).where(agent_activities.c.id == activity_id)).one()


def _events(h: Harness) -> list[Any]:
    with h.engine.connect() as conn:
        return list(conn.execute(sa.select(agent_events).order_by(agent_events.c.created_at)))


async def _decide(h: Harness, *alerts: dict[str, Any]) -> list[dict[str, Any]]:
    response = await h.post(notification(*alerts))
    assert response.status_code == 200, response.text
    verdicts: list[dict[str, Any]] = response.json()["alerts"]
    return verdicts


async def test_an_orphan_recovery_closes_its_dispatch_activity_failed_with_the_rows_error(harness: Harness) -> None:
    harness.add_execution("e1", "a1", age_seconds=300)
    with harness.engine.begin() as conn:
        insert_activity(conn, "act-1", "a1", "e1", activity_type="schedule_start", age_seconds=300)
        insert_activity(conn, "tool-1", "a1", "e1", activity_type="tool_call", age_seconds=200)  # shares the id
    [verdict] = await _decide(harness, alert("e1", "a1"))
    assert verdict["outcome"] == "recovered", verdict
    row, act = harness.row("e1"), _activity(harness, "act-1")
    assert (act.activity_state, act.error) == ("failed", row.error)
    assert act.completed_at.endswith("Z") and 299_000 <= act.duration_ms <= 340_000  # measured, like Trinity's
    assert _activity(harness, "tool-1").activity_state == "started"  # never a tool_call row in its place
    assert harness.evidence("e1")[-1][1]["closed"] == {"activities": ["act-1"], "agent_event": None}


async def test_a_failed_close_never_overwrites_a_terminal_activity(harness: Harness) -> None:
    harness.add_execution("e1", "a1")
    with harness.engine.begin() as conn:
        insert_activity(conn, "act-done", "a1", "e1", state="completed", completed_at="2026-01-01T00:00:00.000000Z")
    [verdict] = await _decide(harness, alert("e1", "a1"))
    assert verdict["outcome"] == "recovered"
    act = _activity(harness, "act-done")
    assert (act.activity_state, act.completed_at, act.error) == ("completed", "2026-01-01T00:00:00.000000Z", None)


async def test_a_failed_run_with_a_matching_subscription_gets_one_agent_event(harness: Harness) -> None:
    harness.add_execution("e1", "a1", fan_out_id="fan-7", loop_id=None)
    with harness.engine.begin() as conn:
        insert_subscription(conn, "sub-1", "a2", "a1")
        insert_subscription(conn, "sub-2", "watcher", "a1")
        insert_subscription(conn, "sub-off", "a3", "a1", enabled=False)
        insert_subscription(conn, "sub-done", "a4", "a1", "agent.task.completed")
    [verdict] = await _decide(harness, alert("e1", "a1"))
    assert verdict["outcome"] == "recovered"
    [event] = _events(harness)
    assert event.id.startswith("evt_") and len(event.id) == 4 + 16  # token_urlsafe(12)
    assert (event.source_agent, event.event_type, event.subscriptions_triggered) == ("a1", "agent.task.failed", 2)
    payload = json.loads(event.payload)
    assert payload == {"execution_id": "e1", "status": "failed", "triggered_by": "manual",
                       "summary_or_error": harness.row("e1").error, "duration_ms": None, "cost": None,
                       "fan_out_id": "fan-7", "loop_id": None}
    assert harness.evidence("e1")[-1][1]["closed"]["agent_event"] == event.id
    again = await _decide(harness, alert("e1", "a1"))  # a repeat delivery cannot win again: no second event
    assert again[0]["outcome"] == "skipped" and len(_events(harness)) == 1


@pytest.mark.parametrize("case", ["no subscription", "event-triggered run", "another agent's subscription"])
async def test_no_agent_event_is_written_when_nobody_listens_or_the_run_came_from_an_event(
        harness: Harness, case: str) -> None:
    harness.add_execution("e1", "a1", triggered_by="event" if case == "event-triggered run" else "schedule")
    with harness.engine.begin() as conn:
        if case != "no subscription":
            insert_subscription(conn, "sub-1", "a2", "a2" if case == "another agent's subscription" else "a1")
    [verdict] = await _decide(harness, alert("e1", "a1"))
    assert verdict["outcome"] == "recovered"
    assert _events(harness) == []


async def test_a_claimed_success_completes_a_provisionally_failed_activity_and_emits_completed(
        harness: Harness, agents: AgentServer) -> None:
    harness.add_execution("e-ok", "a1", age_seconds=60)
    with harness.engine.begin() as conn:
        insert_activity(conn, "act-ok", "a1", "e-ok", state="failed", age_seconds=60)
        insert_subscription(conn, "sub-1", "a2", "a1", "agent.task.completed")
    await retained_then_forgotten(agents.registry("a1"), "e-ok", RunResult(True, "the answer", 0.5))
    [verdict] = await _decide(harness, alert("e-ok", "a1"))
    assert verdict["outcome"] == "recovered", verdict
    act = _activity(harness, "act-ok")
    assert (act.activity_state, act.error) == ("completed", None)
    [event] = _events(harness)
    payload = json.loads(event.payload)
    assert (event.event_type, payload["status"], payload["cost"]) == ("agent.task.completed", "success", 0.5)
    assert payload["summary_or_error"].endswith("the answer")


async def test_every_recovery_is_one_trinity_events_entry_in_trinitys_envelope(harness: Harness,
                                                                               redis_url: str) -> None:
    for execution_id in ("e1", "e2"):
        harness.add_execution(execution_id, "a1")
    [first] = await _decide(harness, alert("e1", "a1"))
    verdicts = await _decide(harness, alert("e1", "a1"), alert("e2", "a1"), alert("e2", "a1"))
    assert first["outcome"] == "recovered" and [v["outcome"] for v in verdicts] == ["skipped", "recovered", "skipped"]
    entries = read_stream(redis_url)
    assert recoveries_per_execution(redis_url) == {"e1": 1, "e2": 1}
    for entry in entries:
        assert entry.fields == {"payload", "scope", "agent_name"}
        assert (entry.scope, entry.agent_name) == ("all", "a1")
        assert entry.payload["type"] == "watchdog_recovery" and entry.payload["action"] == "orphan_recovered"


async def test_a_retried_announcement_adds_no_second_stream_entry(harness: Harness, redis_url: str) -> None:
    """The stream entry shares the channel message's once-only marker: a finish retried after a crash
    between announcing and recording it adds nothing."""
    harness.add_execution("e1", "a1")
    [verdict] = await _decide(harness, alert("e1", "a1"))
    assert verdict["outcome"] == "recovered"
    with harness.engine.connect() as conn:
        [row] = conn.execute(sa.select(audit.recoveries)).all()
    await opened(harness.app, State).remediator.announcer.announce([audit._recovery(row)], utcnow())
    assert recoveries_per_execution(redis_url) == {"e1": 1}


# -- the closing rules themselves, on the database alone -------------------------------------------

def _seed(conn: sa.Connection) -> None:
    insert_execution(conn, "e1", "a1", age_seconds=7200, status="failed", error="our text")
    insert_activity(conn, "x1", "a1", "e1", age_seconds=7200)
    insert_activity(conn, "x2", "a1", "e1", activity_type="schedule_start", age_seconds=3600)
    insert_activity(conn, "x3", "a1", "e1", state="cancelled", age_seconds=60)


def test_a_sweep_rule_closes_every_open_dispatch_activity_with_null_duration(platform: sa.Engine) -> None:
    closing.RULES["test_sweep"] = closing.STALE_SWEEP
    try:
        with platform.begin() as conn:
            _seed(conn)
            closed = closing.after_won(conn, "test_sweep", "e1", utcnow())
            rows = {r.id: r for r in conn.execute(sa.select(agent_activities))}
    finally:
        del closing.RULES["test_sweep"]
    assert sorted(closed.activities) == ["x1", "x2"]
    for activity_id in ("x1", "x2"):
        assert (rows[activity_id].activity_state, rows[activity_id].error, rows[activity_id].duration_ms) == (
            "failed", texts.STALE_SWEEP_ACTIVITY_TEXT, None)
    assert rows["x3"].activity_state == "cancelled"


def test_the_per_row_rule_closes_only_the_open_activity_first(platform: sa.Engine) -> None:
    with platform.begin() as conn:
        _seed(conn)
        closed = closing.after_won(conn, "fail_orphan", "e1", utcnow())
        states = {r.id: r.activity_state for r in conn.execute(sa.select(agent_activities))}
    assert len(closed.activities) == 1 and states == {**states, closed.activities[0]: "failed"}
    assert sorted(states.values()) == ["cancelled", "failed", "started"]


@pytest.mark.parametrize("remediation", ["finalize_skipped", "expire_backlog"])
def test_skipped_and_backlog_rows_close_no_activity_and_emit_no_event(platform: sa.Engine, remediation: str) -> None:
    with platform.begin() as conn:
        _seed(conn)
        insert_subscription(conn, "sub-1", "a2", "a1")
        closed = closing.after_won(conn, remediation, "e1", utcnow())
        states = [r.activity_state for r in conn.execute(sa.select(agent_activities))]
        events = conn.execute(sa.select(agent_events)).all()
    assert closed.activities == [] and closed.event_id is None and events == []
    assert sorted(states) == ["cancelled", "started", "started"]


def test_the_activity_state_follows_trinitys_terminal_mapping() -> None:
    assert [activities.state_for(s) for s in ("success", "cancelled", "failed", "skipped")] == [
        "completed", "cancelled", "failed", "failed"]


def test_an_activity_with_an_unreadable_start_is_closed_with_null_duration(platform: sa.Engine) -> None:
    with platform.begin() as conn:
        insert_activity(conn, "bad", "a1", "e9", started_at="yesterday-ish")
        closed = activities.close_one(conn, "e9", "failed", "x", utcnow() + timedelta(seconds=1))
        row = conn.execute(sa.select(agent_activities)).one()
    assert closed == "bad" and (row.activity_state, row.duration_ms) == ("failed", None)


async def test_a_database_without_the_activity_tables_still_recovers_and_closes_nothing(
        sqlite_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    """A database an older ``db init`` made has no activity or event tables: recoveries go on."""
    from exec_watchdog.platform_access import database as db
    from exec_watchdog.platform_access.schema import agent_ownership, agent_schedules, metadata, schedule_executions
    from exec_watchdog.platform_access.slots import slot_metadata

    engine = db.create_engine(sqlite_url)
    metadata.create_all(engine, tables=[schedule_executions, agent_schedules, agent_ownership])
    slot_metadata.create_all(engine)
    engine.dispose()
    async with remediator(sqlite_url, redis_url, agents) as h:
        h.add_execution("e1", "a1")
        [verdict] = await _decide(h, alert("e1", "a1"))
        assert verdict["outcome"] == "recovered", verdict
        assert h.row("e1").status == "failed"
        assert "closed" not in h.evidence("e1")[-1][1]


def test_one_transaction_closes_many_wins_with_one_read_of_each_kind(platform: sa.Engine) -> None:
    """The batch close (closing.after_won_many) picks per run exactly what a close of that run alone picks."""
    now = utcnow()
    with platform.begin() as conn:
        insert_execution(conn, "e1", "a1", status="failed", error="lost")
        insert_activity(conn, "x1", "a1", "e1", age_seconds=7200)
        insert_activity(conn, "x2", "a1", "e1", activity_type="schedule_start", age_seconds=3600)  # newest open
        insert_execution(conn, "e2", "a2", status="success", response="done")
        insert_activity(conn, "y1", "a2", "e2", state="failed", age_seconds=60)  # a success corrects it
        insert_execution(conn, "e3", "a1", status="failed", error="lost")  # no activity: only the event
        insert_execution(conn, "e4", "a1", status="failed", error="lost")
        insert_activity(conn, "z1", "a1", "e4", state="completed", age_seconds=60)  # terminal: left alone
        insert_execution(conn, "e6", "a1", status="failed", error="lost")
        insert_subscription(conn, "sub-1", "a2", "a1")  # a2 listens to a1's failures; nobody to a2's
        picked_alone = {e: activities.closable_of(conn, {e: s}, chunk=1) for e, s in
                        (("e1", "failed"), ("e2", "success"), ("e4", "failed"))}
        closed = closing.after_won_many(conn, [("fail_orphan", "e1"), ("claim_result", "e2"), ("fail_orphan", "e3"),
                                               ("fail_orphan", "e4"), ("fail_orphan", "e5"),
                                               ("finalize_skipped", "e6")], now)
        states = {r.id: r.activity_state for r in conn.execute(sa.select(agent_activities))}
        events = {json.loads(r.payload)["execution_id"]: r for r in conn.execute(sa.select(agent_events))}
    assert {e: p[e].id for e, p in picked_alone.items() if e in p} == {"e1": "x2", "e2": "y1"}
    assert {e: c.activities for e, c in closed.items()} == {"e1": ["x2"], "e2": ["y1"], "e3": [], "e4": [],
                                                           "e5": [], "e6": []}
    assert states == {"x1": "started", "x2": "failed", "y1": "completed", "z1": "completed"}
    assert sorted(events) == ["e1", "e3", "e4"] and {r.subscriptions_triggered for r in events.values()} == {1}
    assert {e: c.event_id for e, c in closed.items() if c.event_id} == {e: r.id for e, r in events.items()}
