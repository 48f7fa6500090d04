"""No hostile input, slow peer, skewed clock or duplicate may cause a false kill or stop
remediation: each case against real simulated agents (behind a real misbehaving HTTP front where
the peer must misbehave), a real database and Redis."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, cast

import pytest
import redis
import sqlalchemy as sa

from exec_watchdog.common.serving import opened
from exec_watchdog.platform_access.schema import schedule_executions
from exec_watchdog.platform_access.timestamps import format_utc, utcnow
from exec_watchdog.remediator import audit
from exec_watchdog.remediator.app import State
from exec_watchdog.simulated_platform.agent_server import AgentServer
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.remediator_harness import received, remediator, subscriber
from tests.agent_front import AgentFront, agent_front

pytestmark = pytest.mark.timeout(120)
SECRET = "test-agent-secret"


@pytest.fixture
async def front(agents: AgentServer) -> AsyncIterator[AgentFront]:
    async with agent_front(agents) as f:
        yield f


def _via(front: AgentFront) -> AgentServer:
    return cast(AgentServer, front)  # the harness only needs its url_template


def _outcomes(response: Any) -> dict[str, str]:
    return {a["execution_id"]: a["outcome"] for a in response.json()["alerts"]}


async def _eventually(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


# -- false kills ------------------------------------------------------------------------------------

async def test_a_clock_ahead_of_the_database_does_not_make_a_young_run_an_orphan(
        sqlite_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The remediator's clock runs 180 s ahead (a fake clock: the machine's cannot be moved here);
    a 5-second-old run its agent does not know yet is too young on the database's clock."""
    import exec_watchdog.remediator.remediate as remediate

    monkeypatch.setattr(remediate, "utcnow", lambda: utcnow() + timedelta(seconds=180))
    async with remediator(sqlite_url, redis_url, agents) as h:
        h.add_execution("e1", "a1", age_seconds=5)
        response = await h.post(notification(alert("e1", "a1")))
        assert _outcomes(response) == {"e1": "skipped"}
        assert "too young" in response.json()["alerts"][0]["reason"]
        assert h.row("e1").status == "running"


# -- slow peers -------------------------------------------------------------------------------------

async def test_a_trickling_agent_neither_holds_deliveries_nor_starves_other_agents(
        sqlite_url: str, redis_url: str, redis_client: redis.Redis, front: AgentFront) -> None:
    """Fifty terminates on an agent trickling one byte every 2 s (default settings): each ends by
    its deadline as a retry, and an orphan on a healthy agent is recovered meanwhile."""
    front.behaviours["slow"] = "trickle"
    async with remediator(sqlite_url, redis_url, _via(front)) as h:
        for i in range(50):
            h.add_execution(f"slow-{i}", "slow", age_seconds=7200)
        h.add_execution("e-orphan", "a1", age_seconds=120)
        slow = [asyncio.ensure_future(h.post(notification(alert(f"slow-{i}", "slow", "terminate_overdue"))))
                for i in range(50)]
        await _eventually(lambda: front.terminates and sum(front.terminates.values()) >= 4, 20,
                          "the slow agent is being called")
        await asyncio.sleep(0.5)  # setup, not a timing assertion: every delivery reaches its agent call
        started = time.monotonic()
        response = await asyncio.wait_for(h.post(notification(alert("e-orphan", "a1"))), 20)
        assert _outcomes(response) == {"e-orphan": "recovered"}
        assert time.monotonic() - started < 8
        done = await asyncio.wait_for(asyncio.gather(*slow), 60)  # wait 10 s + deadline 15 s, never more
        assert all(r.status_code == 503 for r in done)
        assert {o for r in done for o in _outcomes(r).values()} == {"retry"}
        assert all(h.row(f"slow-{i}").status == "running" for i in range(50))


async def test_readiness_fails_while_deliveries_cannot_make_progress(
        sqlite_url: str, redis_url: str, redis_client: redis.Redis, front: AgentFront) -> None:
    front.behaviours["slow"] = "trickle"
    async with remediator(sqlite_url, redis_url, _via(front), agent_terminate_timeout=4.0,
                          stalled_after_seconds=1.5) as h:
        h.add_execution("slow-0", "slow", age_seconds=7200)
        assert (await h.client.get("/readyz")).status_code == 200
        stuck = asyncio.ensure_future(h.post(notification(alert("slow-0", "slow", "terminate_overdue"))))
        ready = await h.client.get("/readyz")
        for _ in range(60):
            if ready.status_code == 503:
                break
            await asyncio.sleep(0.1)
            ready = await h.client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["stalled_deliveries"] == 1
        assert (await asyncio.wait_for(stuck, 20)).status_code == 503
        assert (await h.client.get("/readyz")).status_code == 200


# -- the breaker counts changes made ----------------------------------------------------------------

async def test_failed_attempts_and_duplicates_do_not_trip_the_breaker(
        sqlite_url: str, redis_url: str, redis_client: redis.Redis, front: AgentFront) -> None:
    front.behaviours["broken"] = "error"
    async with remediator(sqlite_url, redis_url, _via(front), breaker_max_actions=2) as h:
        h.add_execution("e-stuck", "broken", age_seconds=7200)
        for _ in range(10):  # a terminate that fails changes nothing
            response = await h.post(notification(alert("e-stuck", "broken", "terminate_overdue")))
            assert _outcomes(response) == {"e-stuck": "retry"}
        h.add_execution("e-dup", "a1", age_seconds=120)
        duplicates = await asyncio.gather(*(h.post(notification(alert("e-dup", "a1"))) for _ in range(12)))
        assert [o for r in duplicates for o in _outcomes(r).values()].count("recovered") == 1
        h.add_execution("e-next", "a1", age_seconds=120)
        response = await h.post(notification(alert("e-next", "a1")))
        assert _outcomes(response) == {"e-next": "recovered"}


# -- one alert never poisons its notification -------------------------------------------------------

async def test_a_rerun_of_a_recovered_id_is_recovered_again_beside_a_genuine_orphan(
        sqlite_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    async with remediator(sqlite_url, redis_url, agents) as h:
        events = subscriber(redis_url)
        h.add_execution("e1", "a1", age_seconds=120)
        assert _outcomes(await h.post(notification(alert("e1", "a1")))) == {"e1": "recovered"}
        with h.engine.begin() as conn:  # the platform runs the same id again
            conn.execute(sa.update(schedule_executions).where(schedule_executions.c.id == "e1")
                         .values(status="running", started_at=format_utc(utcnow() - timedelta(seconds=90))))
        h.slots.acquire("a1", "e1", utcnow(), "again", 3600)
        h.add_execution("e2", "a1", age_seconds=120)
        response = await h.post(notification(alert("e1", "a1"), alert("e2", "a1")))
        assert response.status_code == 200, response.text
        assert _outcomes(response) == {"e1": "recovered", "e2": "recovered"}
        assert h.slots.held("a1") == set()
        announced = [e["execution_id"] for e in received(events, wait=1.0)]
        assert sorted(announced) == ["e1", "e1", "e2"]


async def test_an_agent_answering_absurdly_nested_json_costs_only_its_own_alerts(
        sqlite_url: str, redis_url: str, redis_client: redis.Redis, front: AgentFront) -> None:
    front.behaviours["deep"] = "deep"
    async with remediator(sqlite_url, redis_url, _via(front)) as h:
        h.add_execution("e-deep", "deep", age_seconds=120)
        h.add_execution("e-ok", "a1", age_seconds=120)
        response = await h.post(notification(alert("e-deep", "deep"), alert("e-ok", "a1")))
        assert response.status_code == 503
        assert _outcomes(response) == {"e-deep": "retry", "e-ok": "recovered"}
        assert h.row("e-deep").status == "running"


async def test_a_dropped_audit_table_is_a_retry_not_a_crash(
        database_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    """SQLite reports a missing table as OperationalError, PostgreSQL as ProgrammingError: both 503."""
    async with remediator(database_url, redis_url, agents) as h:
        h.add_execution("e1", "a1", age_seconds=120)
        with h.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE watchdog_decisions"))
        response = await h.post(notification(alert("e1", "a1")))
        assert response.status_code == 503
        assert h.row("e1").status == "failed"  # the recovery stands; its audit row is what is owed


async def test_a_row_locked_by_another_writer_is_retried_and_its_neighbour_recovered(
        postgres_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    async with remediator(postgres_url, redis_url, agents) as h:
        h.add_execution("e-locked", "a1", age_seconds=120)
        h.add_execution("e-free", "a1", age_seconds=120)
        held, release = threading.Event(), threading.Event()

        def hold_lock() -> None:
            with h.engine.begin() as conn:
                conn.execute(sa.text("SELECT id FROM schedule_executions WHERE id = 'e-locked' FOR UPDATE"))
                held.set()
                release.wait(40)

        locker = threading.Thread(target=hold_lock)
        locker.start()
        try:
            assert await asyncio.to_thread(held.wait, 10)
            started = time.monotonic()
            response = await h.post(notification(alert("e-locked", "a1"), alert("e-free", "a1")))
            assert time.monotonic() - started < 15
            assert _outcomes(response) == {"e-locked": "retry", "e-free": "recovered"}
            assert response.status_code == 503
        finally:
            release.set()
            await asyncio.to_thread(locker.join)
        assert h.row("e-locked").status == "running"


# -- exactly one replica kills ----------------------------------------------------------------------

async def test_two_replicas_with_the_same_overdue_alert_terminate_once(
        postgres_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer,
        front: AgentFront) -> None:
    async with remediator(postgres_url, redis_url, _via(front), replica="r1") as r1, \
            remediator(postgres_url, redis_url, _via(front), replica="r2") as r2:
        ids = [f"e{i}" for i in range(6)]
        for execution_id in ids:
            r1.add_execution(execution_id, "a1", age_seconds=7200)
            await agents.registry("a1").start(execution_id, 600)
        responses = await asyncio.gather(*(h.post(notification(alert(e, "a1", "terminate_overdue")))
                                           for e in ids for h in (r1, r2)))
        outcomes = [o for r in responses for o in _outcomes(r).values()]
        assert outcomes.count("recovered") == len(ids), outcomes
        assert {e: front.terminates[e] for e in ids} == dict.fromkeys(ids, 1)


async def test_a_kill_whose_exit_report_wins_the_update_is_the_watchdogs(
        sqlite_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer,
        front: AgentFront) -> None:
    async with remediator(sqlite_url, redis_url, _via(front)) as h:
        events = subscriber(redis_url)
        h.add_execution("e1", "a1", age_seconds=7200)
        await agents.registry("a1").start("e1", 600)

        def exit_report(execution_id: str) -> None:  # the platform records the exit before we do
            with h.engine.begin() as conn:
                conn.execute(sa.update(schedule_executions).where(schedule_executions.c.id == execution_id)
                             .values(status="failed", error="process exited with code -2"))

        front.after_terminate = exit_report
        response = await h.post(notification(alert("e1", "a1", "terminate_overdue")))
        assert _outcomes(response) == {"e1": "recovered"}, response.text
        assert "recorded the exit" in response.json()["alerts"][0]["reason"]
        announced = received(events, wait=1.0)
        assert [(e["execution_id"], e["action"]) for e in announced] == [("e1", "auto_terminated")]
        assert h.slots.held("a1") == set()


# -- the sweeper ------------------------------------------------------------------------------------

async def test_the_sweeper_finishes_an_outbox_row_with_an_unreadable_field_beside_the_rest(
        sqlite_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    """An unreadable alert start is replaced by the recovery's time: the recovery is still announced
    and finished, not claimed and logged again every sweep."""
    async with remediator(sqlite_url, redis_url, agents, sweep_interval_seconds=3600) as h:
        h.add_execution("e-good", "a1", age_seconds=120)
        h.slots.acquire("a1", "e-bad", utcnow(), "msg", 3600)
        events = subscriber(redis_url)
        now = utcnow()
        row = {"agent_name": "a1", "action": "fail_orphan", "reason": "r", "fingerprint": "f", "runtime_seconds": 1.0,
               "recovered_at": format_utc(now), "claimed_by": "gone", "claim_expires_at": "0000"}
        with h.engine.begin() as conn:
            conn.execute(sa.insert(audit.recoveries), [
                {**row, "execution_id": "e-bad", "alert_started_at": "not a time"},
                {**row, "execution_id": "e-good", "alert_started_at": format_utc(now)}])
        await opened(h.app, State).remediator.finish_unfinished()

        def still_open() -> list[str]:
            with h.engine.connect() as conn:
                return [r[0] for r in conn.execute(sa.select(audit.recoveries.c.execution_id)
                                                   .where(audit.recoveries.c.announced_at.is_(None)))]

        await _eventually(lambda: still_open() == [], 10, "both recoveries are finished")
        assert h.slots.held("a1") == set()
        assert sorted(e["execution_id"] for e in received(events, wait=1.0)) == ["e-bad", "e-good"]


# -- the HTTP face ----------------------------------------------------------------------------------

async def test_absurd_query_values_are_400(sqlite_url: str, redis_url: str, redis_client: redis.Redis,
                                           agents: AgentServer) -> None:
    async with remediator(sqlite_url, redis_url, agents) as h:
        auth = {"Authorization": "Bearer test-webhook-token"}
        for params in ({"limit": "9" * 4301}, {"limit": "0" * 50 + "5"}, {"agent": "a" * 5000}):
            response = await h.client.get("/api/v1/audit", params=params, headers=auth)
            assert response.status_code == 400, (params, response.status_code)


async def test_the_live_page_forbids_framing_and_foreign_content(
        sqlite_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    async with remediator(sqlite_url, redis_url, agents) as h:
        response = await h.client.get("/")
        assert response.status_code == 200
        assert response.headers["x-frame-options"] == "DENY"
        policy = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy


async def test_remediation_label_values_never_become_metric_series(
        sqlite_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    async with remediator(sqlite_url, redis_url, agents) as h:
        junk = [alert(f"e{i}", "a1", f"junk-{i}-" + "x" * 10_000) for i in range(20)]
        assert (await h.post(notification(*junk))).status_code == 200
        metrics = (await h.client.get("/metrics")).text
        assert "junk-" not in metrics
        assert h.sample("exec_watchdog_remediator_alerts_total", status="firing", remediation="other") == 20
        assert len(metrics) < 100_000
