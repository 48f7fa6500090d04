"""The evidence kept with every decision, read back for each decision path and checked against what
the simulated agents (real processes) and the database really said; the story API built from it."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from exec_watchdog.common.serving import opened
from exec_watchdog.platform_access.agent_client import AgentClient
from exec_watchdog.platform_access.schema import schedule_executions
from exec_watchdog.platform_access.timestamps import format_utc, parse_utc, utcnow
from exec_watchdog.remediator import audit
from exec_watchdog.remediator.app import State
from exec_watchdog.remediator.evidence import MAX_BYTES, REDACTED, Evidence
from exec_watchdog.remediator.payload import parse_notification
from exec_watchdog.remediator.story import describe
from exec_watchdog.simulated_platform.agent_server import AgentServer
from exec_watchdog.simulated_platform.process_registry import LastError, RegistryConfig
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.platform_rows import insert_agent, insert_schedule
from exec_watchdog.testbed.remediator_harness import SECRET, TOKEN, Harness, received, remediator, subscriber
from exec_watchdog.testbed.servers import alertmanager_server, free_port

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def only_evidence(h: Harness, execution_id: str, outcome: str) -> dict[str, Any]:
    [(got, evidence)] = h.evidence(execution_id)
    assert got == outcome, (got, evidence)
    return evidence


async def started_on_agent(agents: AgentServer, agent: str, execution_id: str, seconds: float) -> None:
    await agents.registry(agent).start(execution_id, seconds)


async def until(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.05)


def agent_lists(agents: AgentServer, agent: str) -> dict[str, int]:
    registry = agents.registry(agent)
    return {"running": len(registry.running()), "pending": len(registry.pending_ids()),
            "recently_completed": len(registry.recently_completed_ids())}


def assert_row_as_read(evidence: dict[str, Any], h: Harness, execution_id: str, *, status: str,
                       timeout: int, source: str) -> None:
    row, stored = evidence["row"], h.row(execution_id)
    assert row["found"] is True and row["status"] == status
    assert parse_utc(row["started_at"]) == parse_utc(stored.started_at)
    age = (parse_utc(row["read_at"]) - parse_utc(stored.started_at)).total_seconds()
    assert row["age_seconds"] == pytest.approx(age, abs=0.01)
    assert (row["timeout_seconds"], row["timeout_source"]) == (timeout, source)


# -- the decision paths -----------------------------------------------------------------------------


async def test_orphan_failed_keeps_what_the_row_the_agent_and_the_update_said(
        harness: Harness, agents: AgentServer, redis_url: str) -> None:
    h = harness
    h.add_execution("e1", "a1", age_seconds=120)
    await started_on_agent(agents, "a1", "other-running", 30)
    await started_on_agent(agents, "a1", "other-done", 0)
    await until(lambda: "other-done" in agents.registry("a1").recently_completed_ids(), "a run completed")
    events = subscriber(redis_url)
    sent = alert("e1", "a1", fingerprint="0123456789abcdef")

    response = await h.post(notification(sent))

    assert response.json()["alerts"][0]["outcome"] == "recovered"
    evidence = only_evidence(h, "e1", "recovered")
    assert_row_as_read(evidence, h, "e1", status="running", timeout=3600, source="default")
    assert evidence["agent"] == {
        "asked": "GET /api/executions/running", "answer": "answered", "reachable": True,
        "response_ms": evidence["agent"]["response_ms"], "in_running": False, "in_pending": False,
        "in_recently_completed": False, **agent_lists(agents, "a1")}
    assert evidence["agent"]["running"] == 1 and evidence["agent"]["recently_completed"] == 1
    assert evidence["update"]["won"] is True and evidence["update"]["rows_changed"] == 1
    assert evidence["update"]["wrote"] == {"status": "failed", "error": h.row("e1").error}
    assert evidence["alert"]["labels"]["execution_id"] == "e1"
    assert evidence["alert"]["fingerprint"] == "0123456789abcdef"
    assert parse_utc(evidence["alert"]["starts_at"]) == parse_utc(sent["startsAt"])
    assert evidence["alert"]["generator_url"] == sent["generatorURL"]
    delivery = evidence["delivery"]
    assert (delivery["alertmanager"], delivery["receiver"], delivery["deliveries_seen"]) == (
        "http://127.0.0.1:9093", "remediator", 1)
    assert delivery["user_agent"].startswith("python-httpx/") and delivery["alerts_in_notification"] == 1
    assert evidence["replica"] == "test-replica"
    calls = list(evidence["timings"]["calls"])
    assert calls == ["database: read the row", "agent: GET /api/executions/running", "in-flight markers: read",
                     "agent: GET result", "agent: GET last-error", "database: guarded update"]
    assert evidence["timings"]["alert_start_to_decision_s"] == pytest.approx(
        (parse_utc(evidence["decided_at"]) - parse_utc(sent["startsAt"])).total_seconds(), abs=0.002)
    assert "silences" not in evidence  # no Alertmanager configured to re-check with

    # The same alert again: the replica counts the second delivery; the row now says failed.
    await h.post(notification(sent))
    (_, first), (outcome, second) = h.evidence("e1")
    assert outcome == "skipped" and second["delivery"]["deliveries_seen"] == 2
    assert second["row"]["status"] == "failed" == h.row("e1").status
    assert "agent" not in second and "update" not in second

    # The story: in time order, the announcement exactly as it went out.
    story = (await h.client.get("/api/v1/executions/e1", headers=AUTH)).json()
    kinds = [e["kind"] for e in story["timeline"]]
    # A decision is recorded once its action is done: after the release and the announcement.
    assert kinds == ["started", "alert_fired", "notification", "recovered", "slot_released", "announced",
                     "decision", "notification", "decision"]
    assert [parse_utc(e["at"]) for e in story["timeline"]] == sorted(parse_utc(e["at"]) for e in story["timeline"])
    [announced] = [e for e in story["timeline"] if e["kind"] == "announced"]
    assert [announced["event"]] == received(events)
    decision = story["timeline"][6]["decision"]
    assert decision["evidence"] == first and decision["outcome"] == "recovered"
    assert story["execution"]["status"] == "failed" and story["execution"]["error"] == h.row("e1").error


async def test_overdue_terminated_keeps_the_timeout_source_and_the_terminate_answer(
        harness: Harness, agents: AgentServer) -> None:
    h = harness
    with h.engine.begin() as c:
        insert_agent(c, "a1", timeout_seconds=900)
        insert_schedule(c, "s1", "a1", timeout_seconds=60)
    h.add_execution("e1", "a1", age_seconds=125, schedule_id="s1")
    await agents.registry("a1").start("e1", 600)

    response = await h.post(notification(alert("e1", "a1", "terminate_overdue")))

    assert response.json()["alerts"][0]["outcome"] == "recovered"
    evidence = only_evidence(h, "e1", "recovered")
    assert_row_as_read(evidence, h, "e1", status="running", timeout=60, source="schedule")
    terminate = evidence["terminate"]
    assert (terminate["answer"], terminate["status"]) == ("answered", "terminated")
    assert "e1" in agents.registry("a1").recently_completed_ids()  # the agent really ended it
    assert evidence["update"]["wrote"]["error"] == h.row("e1").error
    assert "agent" not in evidence  # the overdue path asks terminate, not /running


async def test_timeout_from_the_agent_is_named_as_such(harness: Harness) -> None:
    with harness.engine.begin() as c:
        insert_agent(c, "a1", timeout_seconds=90)
    harness.add_execution("e1", "a1", age_seconds=30)

    await harness.post(notification(alert("e1", "a1", "terminate_overdue")))

    evidence = only_evidence(harness, "e1", "skipped")
    assert_row_as_read(evidence, harness, "e1", status="running", timeout=90, source="agent")


@pytest.mark.parametrize("state", ["running", "pending", "recently_completed"])
async def test_skipped_because_the_agent_knows_it_says_in_which_list(
        harness: Harness, agents: AgentServer, state: str) -> None:
    harness.add_execution("e1", "a1")
    registry = agents.registry("a1")
    if state == "pending":
        registry.config = RegistryConfig(spawn_delay=30)
    await registry.start("e1", 0 if state == "recently_completed" else 30)
    if state == "recently_completed":
        await until(lambda: "e1" in registry.recently_completed_ids(), "e1 completed")

    await harness.post(notification(alert("e1", "a1")))

    # A run the agent lists as recently completed is not skipped as known: its retained result is
    # asked, and one kept less than the claim defer ago is asked again later (retry).
    evidence = only_evidence(harness, "e1", "retry" if state == "recently_completed" else "skipped")
    agent = evidence["agent"]
    if state == "recently_completed":
        assert evidence["retained_result"]["verdict"] == "retry"
    where = {k: agent[f"in_{k}"] for k in ("running", "pending", "recently_completed")}
    assert where == {k: k == state for k in where}
    assert {k: agent[k] for k in ("running", "pending", "recently_completed")} == agent_lists(agents, "a1")


async def test_skipped_too_young_keeps_the_age_the_row_had(harness: Harness) -> None:
    harness.add_execution("e1", "a1", age_seconds=10)

    await harness.post(notification(alert("e1", "a1")))

    evidence = only_evidence(harness, "e1", "skipped")
    assert 10 <= evidence["row"]["age_seconds"] < 60
    assert_row_as_read(evidence, harness, "e1", status="running", timeout=3600, source="default")
    assert "agent" not in evidence  # decided before asking the agent


async def test_skipped_completed_meanwhile_keeps_the_status_read(harness: Harness) -> None:
    harness.add_execution("e1", "a1", status="success")

    await harness.post(notification(alert("e1", "a1")))

    assert_row_as_read(only_evidence(harness, "e1", "skipped"), harness, "e1", status="success", timeout=3600,
                       source="default")


async def test_skipped_missing_row_says_it_was_not_found(harness: Harness) -> None:
    await harness.post(notification(alert("ghost", "a1")))

    assert only_evidence(harness, "ghost", "skipped")["row"]["found"] is False


async def test_retry_keeps_what_the_unwell_agent_answered(harness: Harness, agents: AgentServer) -> None:
    harness.add_execution("e1", "a1")
    agents.agents["a1"].set_fault("down")

    response = await harness.post(notification(alert("e1", "a1")))

    assert response.status_code == 503
    agent = only_evidence(harness, "e1", "retry")["agent"]
    assert (agent["answer"], agent["reachable"]) == ("server_error", True)
    assert "503" in agent["detail"] and "in_running" not in agent


async def test_retry_keeps_an_agent_that_does_not_answer_in_time(harness: Harness, agents: AgentServer) -> None:
    """A hung agent: the evidence says it was not reached in time, which is not orphaned."""
    harness.add_execution("e1", "a1")
    agents.agents["a1"].set_fault("hang")

    await harness.post(notification(alert("e1", "a1")))

    agent = only_evidence(harness, "e1", "retry")["agent"]
    assert (agent["answer"], agent["reachable"]) == ("timeout", False)
    assert agent["response_ms"] >= harness.config.agent_timeout * 1000 * 0.9


async def test_silenced_and_silence_check_retry_name_the_alertmanagers(
        sqlite_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with alertmanager_server() as am:
        async with remediator(sqlite_url, redis_url, agents, alertmanager_urls=(dead, am)) as h:
            h.add_execution("e1", "a1")
            now = utcnow()
            silence = {"matchers": [{"name": "execution_id", "value": "e1", "isRegex": False, "isEqual": True}],
                       "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=5)).isoformat(),
                       "createdBy": "test", "comment": "hands off e1"}
            async with httpx.AsyncClient() as client:
                created = await client.post(f"{am}/api/v2/silences", json=silence)
                silence_id = created.raise_for_status().json()["silenceID"]
                active = [s for s in (await client.get(f"{am}/api/v2/silences")).json()
                          if s["status"]["state"] == "active"]

            await h.post(notification(alert("e1", "a1")))

            silences = only_evidence(h, "e1", "silenced")["silences"]
            assert silences["answered_by"] == am and silences["matching"] == [silence_id]
            assert silences["active"] == len(active)
            [unanswered] = silences["unanswered"]
            assert unanswered.startswith(dead)
            assert h.row("e1").status == "running"

    async with remediator(sqlite_url, redis_url, agents, alertmanager_urls=(dead,)) as h:
        h.add_execution("e2", "a1")
        await h.post(notification(alert("e2", "a1")))
        silences = only_evidence(h, "e2", "retry")["silences"]
        assert silences["answered_by"] is None and dead in silences["error"]


async def test_lost_race_keeps_the_row_read_as_running_and_the_update_that_changed_nothing(
        postgres_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    """Another writer holds the row (a late success report, not yet committed) while we decide; our
    guarded update waits for it on the real PostgreSQL row lock, then finds the row no longer running."""
    async with remediator(postgres_url, redis_url, agents) as h:
        h.add_execution("e1", "a1")
        with h.engine.connect() as writer, h.engine.connect() as watcher:
            other = writer.begin()
            writer.execute(sa.update(schedule_executions).where(schedule_executions.c.id == "e1")
                           .values(status="success", completed_at=format_utc(utcnow())))
            posted = asyncio.create_task(h.post(notification(alert("e1", "a1"))))

            def our_update_waits() -> bool:
                waiting = watcher.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'UPDATE schedule_executions%'")).scalar_one()
                watcher.commit()
                return bool(waiting)

            await until(our_update_waits, "the guarded update waits on the other writer's lock", 20)
            other.commit()
            response = await posted

        assert response.json()["alerts"][0]["outcome"] == "lost_race"
        evidence = only_evidence(h, "e1", "lost_race")
        assert evidence["row"]["status"] == "running"
        assert evidence["agent"]["in_running"] is False and evidence["agent"]["answer"] == "answered"
        assert evidence["update"] == {"won": False, "rows_changed": 0, "wrote": None}
        assert h.row("e1").status == "success"


async def test_ignored_resolved_notification_keeps_the_alert_and_its_delivery(harness: Harness) -> None:
    await harness.post(notification(alert("e1", "a1", status="resolved")))

    evidence = only_evidence(harness, "e1", "ignored")
    assert evidence["alert"]["status"] == "resolved" and evidence["delivery"]["deliveries_seen"] == 1
    assert "row" not in evidence


# -- the hooks for paths other branches add (in-flight marker, retained result, /last-error) ---------


async def test_last_error_hook_keeps_what_the_agent_answered(agents: AgentServer) -> None:
    await agents.registry("a1").start("e1", 30, last_error=LastError("RateLimitError", "429 from the provider"))
    client = AgentClient(agents.url_template, SECRET)
    try:
        answer = await client.last_error("a1", "e1")
    finally:
        await client.aclose()
    told = agents.registry("a1").last_error("e1")
    assert told is not None

    evidence = Evidence(parse_notification(notification(alert("e1", "a1"))).alerts[0])
    evidence.last_error(answer, 0.004)
    evidence.inflight("absent", seconds=0.001)
    evidence.retained_result("coded_404", http_status=404, detail="no_retained_result", seconds=0.002)
    stored = json.loads(evidence.finish("r1", utcnow()) or "{}")

    assert stored["last_error"]["error_type"] == told.error_type
    assert stored["last_error"]["error_message"] == told.error_message
    assert stored["inflight"] == {"verdict": "absent"}
    assert stored["retained_result"]["http_status"] == 404
    assert list(stored["timings"]["calls"]) == [
        "agent: GET last-error", "in-flight markers: read", "agent: GET result"]
    sentences = describe(stored)
    assert any(s.startswith("in-flight dispatch marker: absent") for s in sentences)
    assert any(s.startswith("retained result: coded_404") for s in sentences)
    assert any(f"[{told.error_type}]" in s for s in sentences)


# -- bounded, never a secret, stored alongside older rows -------------------------------------------


async def test_evidence_is_bounded_and_holds_no_secret(harness: Harness) -> None:
    harness.add_execution("e1", "a1")
    labels: dict[str, Any] = {f"label_{i:03d}": "x" * 5000 for i in range(200)}
    labels["api_token"] = "hunter2-hunter2"
    labels["note"] = f"token {TOKEN} and secret {SECRET}"
    sent = alert("e1", "a1", **labels)
    sent["generatorURL"] = "http://admin:pa55word@prometheus:9090/graph?g0.expr=up&access_token=abcdef123"
    body = notification(sent)
    body["externalURL"] = "http://am-user:am-pass-123@alertmanager:9093"

    await harness.post(body)

    with harness.engine.connect() as c:
        [text] = c.execute(sa.select(audit.decisions.c.evidence)).scalars().all()
    assert len(text.encode()) <= MAX_BYTES
    for secret in (TOKEN, SECRET, "hunter2-hunter2", "pa55word", "abcdef123", "am-pass-123"):
        assert secret not in text, secret
    evidence = json.loads(text)
    assert evidence["alert"]["labels"]["execution_id"] == "e1"
    assert evidence["alert"]["labels_total"] == len(sent["labels"])
    assert evidence["delivery"]["alertmanager"] == f"http://{REDACTED}@alertmanager:9093"


async def test_evidence_off_stores_none(sqlite_url: str, redis_url: str, redis_client: redis.Redis,
                                        agents: AgentServer) -> None:
    async with remediator(sqlite_url, redis_url, agents) as h:
        opened(h.app, State).recorder.enabled = False
        h.add_execution("e1", "a1")
        assert (await h.post(notification(alert("e1", "a1")))).json()["alerts"][0]["outcome"] == "recovered"
        with h.engine.connect() as c:
            assert c.execute(sa.select(audit.decisions.c.evidence)).scalars().all() == [None]


async def test_audit_table_of_an_earlier_version_gets_the_evidence_column(
        database_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    old = sa.MetaData()
    sa.Table("watchdog_decisions", old, *[sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                                          for c in audit.decisions.c if c.name != "evidence"])
    engine = sa.create_engine(database_url)
    old.create_all(engine)
    with engine.begin() as c:
        c.execute(sa.text("INSERT INTO watchdog_decisions (decided_at, replica, alertname, alert_status, fingerprint, "
                          "remediation, agent_name, execution_id, outcome, reason) VALUES ('2026-01-01T00:00:00Z', "
                          "'old', 'A', 'firing', 'f', 'fail_orphan', 'a1', 'e1', 'skipped', 'from before')"))
    engine.dispose()

    async with remediator(database_url, redis_url, agents) as h:
        h.add_execution("e1", "a1")
        await h.post(notification(alert("e1", "a1")))
        story = (await h.client.get("/api/v1/executions/e1", headers=AUTH)).json()

    decisions = [e for e in story["timeline"] if e["kind"] == "decision"]
    assert [d["decision"]["outcome"] for d in decisions] == ["skipped", "recovered"]
    assert decisions[0]["decision"]["evidence"] is None and decisions[0]["facts"][0].startswith("no evidence")
    assert decisions[1]["decision"]["evidence"]["update"]["won"] is True


# -- the story API ------------------------------------------------------------------------------------


async def test_story_api_needs_credentials_and_a_safe_known_id(harness: Harness) -> None:
    assert (await harness.client.get("/api/v1/executions/e1")).status_code == 401
    assert (await harness.client.get("/api/v1/executions/..x", headers=AUTH)).status_code == 400
    unknown = await harness.client.get("/api/v1/executions/never-seen", headers=AUTH)
    assert unknown.status_code == 404 and "never-seen" in unknown.json()["error"]


def test_delivery_counts_stay_bounded_forgetting_the_least_recently_seen() -> None:
    from exec_watchdog.remediator.evidence import DeliveryCounter

    a, b, c = (parse_notification(notification(alert(e, "a1"))).alerts[0] for e in ("e1", "e2", "e3"))
    counter = DeliveryCounter(capacity=2)
    assert [counter.seen(a), counter.seen(b), counter.seen(a)] == [1, 1, 2]
    assert counter.seen(c) == 1  # b, the least recently seen, is forgotten
    assert [counter.seen(a), counter.seen(b)] == [3, 1]


def test_switched_off_evidence_accepts_every_hook_and_stores_nothing() -> None:
    from exec_watchdog.remediator.evidence import HOOKS, UNRECORDED

    assert {"row_read", "agent_answer", "inflight", "retained_result", "last_error", "guarded_update"} <= set(HOOKS)
    assert all(getattr(UNRECORDED, hook)(None, 0.1) is None for hook in HOOKS)
