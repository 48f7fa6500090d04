"""Claim before fail (Trinity #2944) and in-flight dispatches (Trinity #2433), at action time.

Real peers: SQLite and PostgreSQL, Redis, simulated agents running real processes that retain
their results. Only the answers a simulated agent cannot give (a 5xx, garbage or a 21 MB body on
``/result``) come from a scripted HTTP server on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from exec_watchdog.common.serving import opened
from exec_watchdog.platform_access.inflight import RedisInflight
from exec_watchdog.platform_access.run_history import RECOVERED_NOTICE
from exec_watchdog.platform_access.schema import agent_ownership, metadata
from exec_watchdog.platform_access.timestamps import parse_utc
from exec_watchdog.remediator.app import State
from exec_watchdog.remediator.texts import orphan_text
from exec_watchdog.simulated_platform.agent_server import AgentServer, serve_agents
from exec_watchdog.simulated_platform.process_registry import LastError, RegistryConfig, RunResult
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.platform_rows import insert_agent
from exec_watchdog.testbed.remediator_harness import SECRET, Harness, received, remediator, subscriber
from exec_watchdog.testbed.servers import free_port

DAY = 86_400


@pytest.fixture
async def agents() -> AsyncIterator[AgentServer]:
    server = await serve_agents(["a1", "gamma_ops", "old", "legacy"], SECRET, without_result_route=["old"],
                                legacy=["legacy"],
                                config=RegistryConfig(grace_seconds=0.5, kill_wait_seconds=1))
    yield server
    await server.stop()


@pytest.fixture
async def harness(database_url: str, redis_url: str, redis_client: redis.Redis,
                  agents: AgentServer) -> AsyncIterator[Harness]:
    async with remediator(database_url, redis_url, agents, claim_defer_seconds=0) as h:
        yield h


async def _finish(agents: AgentServer, agent: str, execution_id: str, *, forget: bool, **start: Any) -> None:
    """Run to completion on the agent; ``forget`` restarts the agent so only the retained result is left."""
    registry = agents.registry(agent)
    await registry.start(execution_id, 0, **start)
    deadline = time.monotonic() + 10
    while execution_id not in registry.recently_completed_ids() or (
            start.get("result", RunResult()).synchronous and registry.retained(execution_id) is None):
        assert time.monotonic() < deadline, "the run did not finish"
        await asyncio.sleep(0.02)
    if forget:
        registry.wipe()


async def _decide(h: Harness, *alerts: dict[str, Any]) -> list[dict[str, Any]]:
    response = await h.post(notification(*alerts))
    verdicts: list[dict[str, Any]] = response.json()["alerts"]
    return verdicts


async def test_an_orphans_retained_success_is_claimed_not_failed(harness: Harness, agents: AgentServer,
                                                                 redis_url: str) -> None:
    execution_id = "-Ab3_token_urlsafe16x"  # a token_urlsafe id may start with '-'
    harness.add_execution(execution_id, "gamma_ops", age_seconds=300)
    await _finish(agents, "gamma_ops", execution_id, forget=True, result=RunResult(True, "the answer", 0.25))
    events = subscriber(redis_url)
    [verdict] = await _decide(harness, alert(execution_id, "gamma_ops"))
    assert verdict["outcome"] == "recovered", verdict
    row = harness.row(execution_id)
    assert (row.status, row.error, row.cost) == ("success", None, 0.25)
    assert row.response == f"{RECOVERED_NOTICE}\nthe answer"
    assert 299_000 <= row.duration_ms <= 330_000 and row.completed_at.endswith("Z")
    assert row.execution_log is not None
    assert harness.slots.held("gamma_ops") == set()
    [event] = received(events)
    assert (event["action"], event["execution_id"]) == ("result_recovered", execution_id)
    assert event["reason"] == "terminal claimed from the agent's retained result: status=success"
    again = await _decide(harness, alert(execution_id, "gamma_ops"))
    assert again[0]["outcome"] == "skipped" and received(events) == []


async def test_a_retained_failure_is_claimed_as_failed_with_the_agents_error(harness: Harness,
                                                                             agents: AgentServer) -> None:
    harness.add_execution("e-fail", "a1")
    await _finish(agents, "a1", "e-fail", forget=True, exit_code=1,
                  last_error=LastError("auth", "invalid API key"))
    [verdict] = await _decide(harness, alert("e-fail", "a1"))
    assert verdict["outcome"] == "recovered", verdict
    row = harness.row("e-fail")
    assert (row.status, row.error) == ("failed", "invalid API key")
    assert row.response is None


async def test_no_retained_result_fails_the_orphan_saying_so(harness: Harness, agents: AgentServer) -> None:
    """An asynchronously dispatched run has no record: the coded 404."""
    harness.add_execution("e-async", "a1")
    await _finish(agents, "a1", "e-async", forget=True, result=RunResult(synchronous=False))
    [verdict] = await _decide(harness, alert("e-async", "a1"))
    assert verdict["outcome"] == "recovered"
    row = harness.row("e-async")
    assert row.status == "failed" and row.duration_ms is None
    assert row.error == orphan_text("a1", reports_pending=True, no_retained_result=True)
    assert row.error.endswith("— recovered by watchdog, no retained result")


async def test_an_agent_image_without_the_result_route_fails_the_orphan_as_before(harness: Harness) -> None:
    harness.add_execution("e-old", "old")
    [verdict] = await _decide(harness, alert("e-old", "old"))
    assert verdict["outcome"] == "recovered"
    assert harness.row("e-old").error == orphan_text("old", reports_pending=True, no_retained_result=False)


async def test_an_agent_from_before_pending_ids_is_not_said_to_have_reported_pending(harness: Harness) -> None:
    """Trinity says "not pending" only when the image reports pending runs (and this one has no /result)."""
    harness.add_execution("e-legacy", "legacy")
    [verdict] = await _decide(harness, alert("e-legacy", "legacy"))
    assert verdict["outcome"] == "recovered", verdict
    assert harness.row("e-legacy").error == (
        "Execution not tracked by agent 'legacy' (not running, not recently completed) and no live backend "
        "dispatcher (no in-flight marker) — recovered by watchdog")


async def test_a_result_younger_than_the_defer_is_claimed_only_once_old_enough(
        database_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    async with remediator(database_url, redis_url, agents, claim_defer_seconds=1.0) as h:
        h.add_execution("e-fresh", "a1")
        await _finish(agents, "a1", "e-fresh", forget=True)
        [verdict] = await _decide(h, alert("e-fresh", "a1"))
        assert verdict["outcome"] == "retry" and "claimed once it is 1 s old" in verdict["reason"]
        assert h.row("e-fresh").status == "running"
        deadline = time.monotonic() + 10
        while (verdict := (await _decide(h, alert("e-fresh", "a1")))[0])["outcome"] == "retry":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert verdict["outcome"] == "recovered" and h.row("e-fresh").status == "success"


async def test_trinitys_default_defer_is_180_seconds(database_url: str, redis_url: str, redis_client: redis.Redis,
                                                     agents: AgentServer) -> None:
    async with remediator(database_url, redis_url, agents) as h:
        h.add_execution("e-fresh", "a1")
        await _finish(agents, "a1", "e-fresh", forget=True)
        [verdict] = await _decide(h, alert("e-fresh", "a1"))
    assert verdict["outcome"] == "retry" and "claimed once it is 180 s old" in verdict["reason"]


async def test_a_recently_completed_row_is_claimed_and_never_terminated(harness: Harness, agents: AgentServer,
                                                                        redis_url: str) -> None:
    harness.add_execution("e-done", "a1")
    await _finish(agents, "a1", "e-done", forget=False, result=RunResult(True, "done", 0.0))
    assert "e-done" in agents.registry("a1").recently_completed_ids()
    events = subscriber(redis_url)
    [verdict] = await _decide(harness, alert("e-done", "a1", "claim_result"))
    assert verdict["outcome"] == "recovered", verdict
    assert harness.row("e-done").status == "success"
    assert [e["action"] for e in received(events)] == ["result_recovered"]


@pytest.mark.parametrize("remediation", ["claim_result", "fail_orphan"])
async def test_a_recently_completed_row_without_a_record_waits(harness: Harness, agents: AgentServer,
                                                               remediation: str) -> None:
    harness.add_execution("e-wait", "a1")
    await _finish(agents, "a1", "e-wait", forget=False, result=RunResult(synchronous=False))
    [verdict] = await _decide(harness, alert("e-wait", "a1", remediation))
    assert verdict["outcome"] == "skipped" and "waits" in verdict["reason"], verdict
    assert harness.row("e-wait").status == "running"
    assert harness.slots.held("a1") == {"e-wait"}


async def test_a_claim_result_alert_never_fails_a_run(harness: Harness, agents: AgentServer) -> None:
    """A run that left the recently-completed window with no record is the orphan alert's to fail."""
    harness.add_execution("e-gone", "a1")
    harness.add_execution("e-kept", "a1")
    await _finish(agents, "a1", "e-kept", forget=True)
    gone, kept = await _decide(harness, alert("e-gone", "a1", "claim_result"), alert("e-kept", "a1", "claim_result"))
    assert gone["outcome"] == "skipped" and "the orphan alert takes it" in gone["reason"], gone
    assert harness.row("e-gone").status == "running"
    assert kept["outcome"] == "recovered" and harness.row("e-kept").status == "success"


async def test_a_live_inflight_marker_holds_the_orphan_until_it_is_cleared(harness: Harness) -> None:
    harness.add_execution("_e-parked", "a1")
    markers = RedisInflight(harness.redis)
    markers.mark("_e-parked", "a1", "parked", time.time(), 4242)
    [verdict] = await _decide(harness, alert("_e-parked", "a1"))
    assert verdict["outcome"] == "skipped" and "in-flight marker alive" in verdict["reason"]
    assert harness.row("_e-parked").status == "running" and harness.slots.held("a1") == {"_e-parked"}
    markers.clear("_e-parked")
    [verdict] = await _decide(harness, alert("_e-parked", "a1"))
    assert verdict["outcome"] == "recovered"


async def test_unreadable_markers_hold_a_run_younger_than_the_bound_only(
        database_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    async with remediator(database_url, redis_url, agents, claim_defer_seconds=0,
                          inflight_max_age_seconds=1_000) as h:
        opened(h.app, State).remediator.orphans.inflight = RedisInflight.from_url(f"redis://127.0.0.1:{free_port()}/0",
                                                                         timeout=0.5)
        h.add_execution("e-young", "a1", age_seconds=900)
        h.add_execution("e-old", "a1", age_seconds=1_100)
        young, old = await _decide(h, alert("e-young", "a1"), alert("e-old", "a1"))
        assert young["outcome"] == "retry" and "may still be in flight" in young["reason"], young
        assert old["outcome"] == "recovered", old
        assert (h.row("e-young").status, h.row("e-old").status) == ("running", "failed")


async def test_failing_a_run_older_than_24_8_days_writes_null_duration(harness: Harness) -> None:
    """duration_ms is INTEGER in PostgreSQL: the old write overflowed (500 for the whole notification)."""
    harness.add_execution("e-ancient", "a1", age_seconds=25 * DAY)
    response = await harness.post(notification(alert("e-ancient", "a1")))
    assert response.status_code == 200, response.text
    row = harness.row("e-ancient")
    assert (row.status, row.duration_ms) == ("failed", None)


async def test_claiming_a_run_older_than_24_8_days_writes_null_duration(harness: Harness,
                                                                        agents: AgentServer) -> None:
    harness.add_execution("e-ancient", "a1", age_seconds=25 * DAY)
    harness.add_execution("e-recent", "a1", age_seconds=600)
    await _finish(agents, "a1", "e-ancient", forget=False)
    await _finish(agents, "a1", "e-recent", forget=True)
    verdicts = await _decide(harness, alert("e-ancient", "a1"), alert("e-recent", "a1"))
    assert {v["outcome"] for v in verdicts} == {"recovered"}, verdicts
    assert (harness.row("e-ancient").status, harness.row("e-ancient").duration_ms) == ("success", None)
    assert 599_000 <= harness.row("e-recent").duration_ms <= 640_000


async def test_the_agents_last_error_prefixes_the_text_capped_at_2000(
        database_url: str, redis_url: str, redis_client: redis.Redis) -> None:
    """Right after a terminate the agent still has the run's log buffer (it goes at unregister)."""
    config = RegistryConfig(grace_seconds=0.5, kill_wait_seconds=1, unregister_delay=10)
    async with await serve_agents(["a1"], SECRET, config=config) as agents, \
            remediator(database_url, redis_url, agents) as harness:
        with harness.engine.begin() as conn:
            insert_agent(conn, "a1", timeout_seconds=60)
        harness.add_execution("e-long", "a1", age_seconds=125)
        await agents.registry("a1").start("e-long", 600, last_error=LastError("Overloaded", "x" * 3_000))
        [verdict] = await _decide(harness, alert("e-long", "a1", "terminate_overdue"))
        assert verdict["outcome"] == "recovered", verdict
        error = harness.row("e-long").error
    assert error.startswith("[Overloaded] xxx") and len(error) == 2_000


async def test_the_overdue_text_is_trinitys_exactly(harness: Harness, agents: AgentServer) -> None:
    with harness.engine.begin() as conn:
        insert_agent(conn, "a1", timeout_seconds=60)
    harness.add_execution("e-over", "a1", age_seconds=125)
    await agents.registry("a1").start("e-over", 600)
    [verdict] = await _decide(harness, alert("e-over", "a1", "terminate_overdue"))
    assert verdict["outcome"] == "recovered"
    assert harness.row("e-over").error.endswith(
        "Execution auto-terminated after 2 minutes by watchdog (exceeded timeout of 60s)")


async def test_rows_of_soft_deleted_agents_are_left_alone(harness: Harness) -> None:
    with harness.engine.begin() as conn:
        insert_agent(conn, "a1")
        conn.execute(agent_ownership.update().values(deleted_at="2026-11-01T00:00:00.000000Z"))
    harness.add_execution("e-deleted", "a1")
    [verdict] = await _decide(harness, alert("e-deleted", "a1"))
    assert verdict["outcome"] == "skipped" and "soft-deleted" in verdict["reason"]
    assert harness.row("e-deleted").status == "running"


# -- answers only a scripted server gives -------------------------------------------------------------

class ScriptedAgent:
    """A loopback HTTP server: an idle /running, and a chosen answer on /result."""

    def __init__(self) -> None:
        self.result: tuple[int, bytes] = (500, b'{"detail":"boom"}')
        self.terminate: tuple[int, bytes] = (200, b'{"status":"terminated"}')
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.endswith("/running"):
                    status, body = 200, json.dumps({"executions": [], "recently_completed_ids": [],
                                                    "pending_ids": []}).encode()
                elif self.path.endswith("/result"):
                    status, body = agent.result
                else:
                    status, body = 404, b'{"detail":"Execution not found"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # terminate
                status, body = agent.terminate
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.port}/agents/{{agent}}"


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedAgent]:
    agent = ScriptedAgent()
    yield agent
    agent.server.shutdown()
    agent.server.server_close()


def _envelope(**extra: Any) -> bytes:
    return json.dumps({"status": "success", "response": "r", "retained_at": "2026-01-01T00:00:00+00:00",
                       "truncated_log": False, **extra}).encode()


@pytest.mark.parametrize(("answer", "why"), [
    ((500, b'{"detail":"boom"}'), "server_error"),
    ((200, b"not json"), "not JSON"),
    ((200, _envelope(response="x" * 4_000_001)), "longer than 4000000"),
    ((200, b" " * 20_000_001), "larger than 20000000"),
    ((401, b'{"detail":"Unauthorized"}'), "unauthorized"),
])
async def test_any_other_answer_to_result_is_retried_never_failed(
        sqlite_url: str, redis_url: str, redis_client: redis.Redis, scripted: ScriptedAgent,
        answer: tuple[int, bytes], why: str) -> None:
    scripted.result = answer

    class Template:  # the harness only needs the agents' URL template
        url_template = scripted.url_template

    async with remediator(sqlite_url, redis_url, Template(), claim_defer_seconds=0) as h:  # type: ignore[arg-type]
        h.add_execution("e-x", "a1", age_seconds=120)
        response = await h.post(notification(alert("e-x", "a1")))
        assert response.status_code == 503, response.text
        [verdict] = response.json()["alerts"]
        assert verdict["outcome"] == "retry" and why in verdict["reason"], verdict
        assert h.row("e-x").status == "running"


def _remediator_args(*argv: str) -> argparse.Namespace:
    from exec_watchdog.remediator.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["remediator", "--agent-secret", "s", "--insecure-no-auth", *argv])


def test_a_trinity_database_without_slot_tables_and_without_redis_is_refused_at_start(tmp_path: Path) -> None:
    """Before: the row was failed, then its slot release retried forever against a missing table."""
    from exec_watchdog.remediator.cli import build_config

    url = f"sqlite:///{tmp_path / 'trinity.db'}"
    engine = sa.create_engine(url)
    metadata.create_all(engine)  # Trinity's own tables: slots and markers live in Redis
    engine.dispose()
    with pytest.raises(ValueError, match="pass --redis-url"):
        build_config(_remediator_args("--database-url", url))
    assert build_config(_remediator_args("--database-url", url, "--redis-url", "redis://127.0.0.1:1/0"))


@pytest.mark.parametrize(("answer", "status"), [
    ((202, b""), "terminated"),
    ((204, b""), "terminated"),
    ((200, b'{"status":"stopping"}'), "terminated"),
    ((200, b'{"status":"already_finished","returncode":0}'), "already_finished"),
])
async def test_terminate_counts_any_2xx_as_done(scripted: ScriptedAgent, answer: tuple[int, bytes],
                                                status: str) -> None:
    """Trinity's watchdog fails an overdue run after any terminate answer below 300."""
    from exec_watchdog.platform_access.agent_client import AgentClient

    scripted.terminate = answer
    client = AgentClient(scripted.url_template, "s")
    try:
        result = await client.terminate("a1", "e1")
    finally:
        await client.aclose()
    assert result.answered and result.unwrap().status == status, result


async def test_a_claims_evidence_keeps_the_retained_result_and_what_the_claim_wrote(
        harness: Harness, agents: AgentServer) -> None:
    harness.add_execution("e-kept", "a1", age_seconds=300)
    await _finish(agents, "a1", "e-kept", forget=True, result=RunResult(True, "the answer", 0.25))
    [verdict] = await _decide(harness, alert("e-kept", "a1"))
    assert verdict["outcome"] == "recovered", verdict
    [(outcome, evidence)] = harness.evidence("e-kept")
    retained = agents.registry("a1").retained("e-kept")
    assert retained is not None
    assert outcome == "recovered"
    assert evidence["agent"]["in_running"] is False and evidence["agent"]["in_recently_completed"] is False
    assert evidence["inflight"] == {"verdict": "absent"}
    assert (evidence["retained_result"]["verdict"], evidence["retained_result"]["status"]) == ("claim", "success")
    assert parse_utc(evidence["retained_result"]["retained_at"]).timestamp() == pytest.approx(retained.retained_at)
    assert evidence["update"]["won"] is True
    assert evidence["update"]["wrote"] == {"status": harness.row("e-kept").status, "error": ""}
    assert "last_error" not in evidence  # a claim writes the agent's own terminal, no failure text


async def test_an_inflight_skips_evidence_keeps_the_live_marker_verdict(harness: Harness) -> None:
    harness.add_execution("e-held", "a1", age_seconds=300)
    RedisInflight(harness.redis).mark("e-held", "a1", "parked", time.time(), 4242)
    [verdict] = await _decide(harness, alert("e-held", "a1"))
    assert verdict["outcome"] == "skipped"
    [(outcome, evidence)] = harness.evidence("e-held")
    assert outcome == "skipped" and evidence["inflight"]["verdict"] == "alive"
    assert evidence["agent"]["in_running"] is False  # the agent really does not know it yet
    assert "retained_result" not in evidence and "update" not in evidence
