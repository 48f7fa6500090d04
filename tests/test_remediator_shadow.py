"""Shadow mode beside the platform's own cleanup: nothing changed on the platform, one verdict per
subject, and the report agreeing with the metrics.

Real peers: SQLite and PostgreSQL, Redis with Trinity's slot layout and its event stream, simulated
agents running real processes. The platform's cleanup writes are made here by hand, with its exact
texts (the simulated cleanup cycle is another module's); every other part is the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import psutil
import pytest
import redis
import sqlalchemy as sa

from exec_watchdog import cli
from exec_watchdog.common.serving import opened
from exec_watchdog.platform_access.schema import agent_activities, agent_events, schedule_executions
from exec_watchdog.platform_access.timestamps import format_utc, utcnow
from exec_watchdog.remediator import audit, shadow_report, shadow_store, texts
from exec_watchdog.remediator.app import State
from exec_watchdog.remediator.remediate import Settings
from exec_watchdog.remediator.shadow_compare import Comparison
from exec_watchdog.remediator.shadow_verdicts import Settings as ShadowSettings
from exec_watchdog.simulated_platform.agent_server import AgentServer, serve_agents
from exec_watchdog.simulated_platform.process_registry import RegistryConfig, RunResult
from exec_watchdog.testbed.agent_runs import retained_then_forgotten
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.platform_rows import insert_activity, insert_agent, insert_schedule, insert_subscription
from exec_watchdog.testbed.remediator_harness import SECRET, Harness, received, remediator, subscriber
from exec_watchdog.testbed.trinity_stream import read_stream

# Their window and our grace one second each, so every verdict is due within the test.
QUICK = ShadowSettings(interval_seconds=3600, their_cycle_seconds=0, their_margin_seconds=1.0, our_grace_seconds=1.0)


@pytest.fixture
async def agents() -> AsyncIterator[AgentServer]:
    server = await serve_agents(["a1", "a2", "down"], SECRET,
                                config=RegistryConfig(grace_seconds=0.5, kill_wait_seconds=1))
    server.agents["down"].set_fault("down")
    yield server
    await server.stop()


@pytest.fixture
async def harness(database_url: str, redis_url: str, redis_client: redis.Redis,
                  agents: AgentServer) -> AsyncIterator[Harness]:
    async with remediator(database_url, redis_url, agents, shadow=True, shadow_comparison=QUICK,
                          claim_defer_seconds=0) as h:
        with h.engine.begin() as conn:
            for name in ("a1", "a2", "down"):
                insert_agent(conn, name, timeout_seconds=600)  # stale window 600 + 300 = 900 s
        yield h


def _comparison(h: Harness, replica: str = "test-replica", metrics: Any = None) -> Comparison:
    state = opened(h.app, State)
    return Comparison(h.engine, state.remediator.slots, metrics or state.metrics, replica, QUICK)


async def _decide(h: Harness, *alerts: dict[str, Any]) -> list[dict[str, Any]]:
    response = await h.post(notification(*alerts))
    assert response.status_code == 200, response.text
    verdicts: list[dict[str, Any]] = response.json()["alerts"]
    return verdicts


async def _retain_success(agents: AgentServer, agent: str, execution_id: str) -> None:
    await retained_then_forgotten(agents.registry(agent), execution_id, RunResult(True, "the answer", 0.25))


def _their_write(h: Harness, execution_id: str, error: str | None, status: str = "failed") -> None:
    """What the platform's cleanup writes (its guard, its columns, its text)."""
    with h.engine.begin() as conn:
        conn.execute(sa.update(schedule_executions).where(schedule_executions.c.id == execution_id)
                     .values(status=status, error=error, completed_at=format_utc(utcnow()), duration_ms=None))


def _platform(h: Harness) -> dict[str, Any]:
    """Everything of the platform's we could change: its tables, its slots, its event stream."""
    with h.engine.connect() as conn:
        tables = {t.name: sorted(tuple(map(str, r)) for r in conn.execute(sa.select(t)))
                  for t in (schedule_executions, agent_activities, agent_events)}
    keys = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in h.redis.keys("*"))
    slots = {k: h.redis.zrange(k, 0, -1, withscores=True) for k in keys if k.startswith("agent:slots:")}
    hashes = {k: h.redis.hgetall(k) for k in keys if k.startswith("agent:slot:")}
    return {"tables": tables, "keys": keys, "slots": slots, "hashes": hashes}


async def test_the_shadow_remediator_decides_every_path_and_changes_nothing_on_the_platform(
        harness: Harness, agents: AgentServer, redis_url: str) -> None:
    h = harness
    now = utcnow()
    with h.engine.begin() as conn:
        insert_schedule(conn, "s60", "a1", timeout_seconds=60)
        insert_subscription(conn, "sub", "a2", "a1")  # a failure would write an agent_events row
        insert_activity(conn, "act-orphan", "a1", "e-orphan", activity_type="schedule_start")
        insert_activity(conn, "act-old", "a1", None, age_seconds=7300)
    h.add_execution("e-orphan", "a1", age_seconds=120, claude_session_id="s")
    h.add_execution("e-claim", "a2", age_seconds=300, claude_session_id="s")
    await _retain_success(agents, "a2", "e-claim")
    h.add_execution("e-over", "a1", age_seconds=125, schedule_id="s60", claude_session_id="s")
    await agents.registry("a1").start("e-over", 600, ignore_sigint=True)
    pid = agents.registry("a1").status("e-over").pid  # type: ignore[union-attr]
    h.add_execution("e-stale", "a1", age_seconds=1201, claude_session_id="s")  # window + the orphan path's turn
    h.add_execution("e-nosess", "down", age_seconds=61)
    h.add_execution("e-slot-down", "down", age_seconds=5000, claude_session_id="s")
    h.add_execution("e-slot-exp", "a1", age_seconds=5000, claude_session_id="s")
    h.add_execution("e-leak", "a1", age_seconds=60, status="success", completed_at=format_utc(now))
    h.add_execution("s-skip", "a1", age_seconds=5, status="skipped", slot=False)
    h.add_execution("q-old", "a1", status="queued", slot=False,
                    queued_at=format_utc(now - timedelta(hours=25)))
    stale_activity = alert("", "a1", "fail_stale_activity", activity_id="act-old")
    stale_activity["labels"]["alertname"] = "ExecWatchdogActivityStale"
    del stale_activity["labels"]["execution_id"]
    alerts = [alert("e-orphan", "a1"), alert("e-claim", "a2"), alert("e-over", "a1", "terminate_overdue"),
              alert("e-stale", "a1", "fail_stale"), alert("e-nosess", "down", "fail_no_session"),
              alert("e-slot-down", "down", "reclaim_slot_unreachable"),
              alert("e-slot-exp", "a1", "reclaim_expired_slot"), alert("e-leak", "a1", "release_leaked_slot"),
              alert("s-skip", "a1", "finalize_skipped"), alert("q-old", "a1", "expire_backlog"), stale_activity]
    before = _platform(h)
    events = subscriber(redis_url)
    verdicts = await _decide(h, *alerts)
    assert [v["outcome"] for v in verdicts] == ["would_recover"] * len(alerts), verdicts
    assert verdicts[1]["reason"] == "shadow: would claim result"
    await _decide(h, *alerts)  # a repeat delivery: still one decision per subject
    with h.engine.begin() as conn:  # a recovery an earlier live run left unfinished: it waits for a live run
        audit.open_recoveries(conn, [audit.Recovery("e-orphan", "a1", "fail_orphan", "r", "fp", 1.0, now, now)],
                              "earlier-live", claim_ttl=-60)
    assert await opened(h.app, State).remediator.finish_unfinished() == 0
    await asyncio.sleep(0.3)
    assert _platform(h) == before
    assert received(events) == [] and read_stream(redis_url) == []
    assert psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE  # never terminated
    with h.engine.connect() as conn:
        kept = {(r.subject_kind, r.subject_id): r.action for r in conn.execute(sa.select(shadow_store.decisions))}
    assert kept == {
        ("execution", "e-orphan"): "fail_orphan", ("execution", "e-claim"): "claim_result",
        ("execution", "e-over"): "terminate_overdue", ("execution", "e-stale"): "fail_stale",
        ("execution", "e-nosess"): "fail_no_session", ("execution", "e-slot-down"): "reclaim_slot_unreachable",
        ("execution", "e-slot-exp"): "reclaim_expired_slot", ("slot", "a1/e-leak"): "release_leaked_slot",
        ("execution", "s-skip"): "finalize_skipped", ("execution", "q-old"): "expire_backlog",
        ("activity", "act-old"): "fail_stale_activity"}
    response = await h.client.get("/api/v1/now", headers={"Authorization": "Bearer test-webhook-token"})
    remediation = response.json()["remediation"]
    assert (remediation["state"], remediation["shadow"], remediation["dry_run"]) == ("shadow", True, False)


async def test_each_verdict_is_given_once_and_the_report_agrees_with_the_metrics(
        harness: Harness, agents: AgentServer, database_url: str) -> None:
    h = harness
    orphan_text = texts.orphan_text("a1", reports_pending=True, no_retained_result=True)
    for execution_id in ("e-agree", "e-ours", "e-theirs", "e-late-success", "e-first", "e-stale-first"):
        h.add_execution(execution_id, "a1", age_seconds=120, claude_session_id="s")
    h.add_execution("e-claim", "a2", age_seconds=300, claude_session_id="s")
    await _retain_success(agents, "a2", "e-claim")
    h.add_execution("e-leak", "a1", age_seconds=60, status="failed", completed_at=format_utc(utcnow()))
    # Our decisions: the agreed orphan, the lone one, the claim they fail, a leaked slot.
    decided = await _decide(h, alert("e-agree", "a1"), alert("e-ours", "a1"), alert("e-claim", "a2"),
                            alert("e-leak", "a1", "release_leaked_slot"))
    assert {v["outcome"] for v in decided} == {"would_recover"}
    await asyncio.sleep(0.05)
    _their_write(h, "e-agree", orphan_text)
    _their_write(h, "e-claim", orphan_text)  # Trinity #2944: they fail what we would claim
    h.slots.release("a1", "e-leak")
    _their_write(h, "e-theirs", texts.stale_text(900))  # nothing of ours: a kill we would not make
    _their_write(h, "e-late-success", orphan_text)
    _their_write(h, "e-first", orphan_text)  # they were first; our alert arrives after
    [late] = await _decide(h, alert("e-first", "a1"))
    assert late["outcome"] == "skipped"
    comparison = _comparison(h)
    first = {s.subject_id: verdict for s, verdict in comparison.compare()}
    assert first == {"e-agree": "agree", "e-claim": "different", "a1/e-leak": "agree", "e-first": "agree"}
    with h.engine.begin() as conn:  # the run reports success after their failure: Trinity lets it overwrite
        conn.execute(sa.update(schedule_executions).where(schedule_executions.c.id == "e-late-success")
                     .values(status="success", error=None))
    await asyncio.sleep(1.1)  # past their window and our grace
    second = {s.subject_id: verdict for s, verdict in comparison.compare()}
    assert second == {"e-ours": "ours_only", "e-theirs": "theirs_only", "e-late-success": "theirs_only"}
    assert comparison.compare() == []  # nothing is judged twice
    _their_write(h, "e-ours", orphan_text)  # they act after all, past their window: noted, not re-judged
    assert comparison.compare() == []

    with h.engine.connect() as conn:
        rows = {r["subject_id"]: r for r in shadow_store.listed(conn)}
    assert rows["e-agree"]["lead_seconds"] > 0 and rows["e-first"]["lead_seconds"] < 0
    assert rows["e-first"]["our_late"] == 1
    assert (rows["e-late-success"]["their_status"], rows["e-late-success"]["later_status"]) == ("failed", "success")
    assert rows["e-late-success"]["their_error"] == orphan_text  # what they wrote, though the row lost it since
    assert (rows["e-claim"]["our_action"], rows["e-claim"]["their_action"]) == ("claim_result", "fail_orphan")
    assert rows["e-ours"]["their_late_action"] == "fail_orphan"

    expected = {("agree", "fail_orphan"): 2, ("agree", "release_leaked_slot"): 1,
                ("different", "claim_result"): 1, ("ours_only", "fail_orphan"): 1,
                ("theirs_only", "fail_stale"): 1, ("theirs_only", "fail_orphan"): 1}
    metric = "exec_watchdog_shadow_verdicts_total"
    assert {key: h.sample(metric, verdict=key[0], action=key[1]) for key in expected} == expected
    assert h.sample("exec_watchdog_shadow_lead_seconds_count", action="fail_orphan") == 2

    report = shadow_report.build(database_url, None)
    assert report["totals"] == {"agree": 3, "ours_only": 1, "theirs_only": 2, "different": 1}
    assert {(r["verdict"], r["action"]): r["count"] for r in report["by_action"]} == expected
    assert sorted(d["subject"] for d in report["disagreements"]) == [
        "execution:e-claim", "execution:e-late-success", "execution:e-ours", "execution:e-theirs"]
    claim = next(d for d in report["disagreements"] if d["subject_id"] == "e-claim")
    assert claim["ours"]["story"]["execution_id"] == "e-claim"  # our side: the explain story
    assert claim["theirs"]["error"] == orphan_text

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["shadow", "report", "--database-url", database_url, "--format", "json"]) == 0
    assert json.loads(out.getvalue())["totals"] == report["totals"]
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        assert cli.main(["shadow", "report", "--database-url", database_url, "--since", "1h"]) == 0
    text = table.getvalue()
    assert re.search(r"^  theirs_only +2$", text, re.M) and "disagreements: 4" in text
    assert "later the row became success" in text and "they did fail_orphan at" in text
    assert "different execution:e-claim" in text and texts.stale_text(900) in text

    # A restart: the counters start from the table, not from zero.
    restarted = _comparison(h, metrics=type(opened(h.app, State).metrics)(_fresh_registry()))
    restarted.restore()
    assert {key: restarted.metrics.registry.get_sample_value(metric, {"verdict": key[0], "action": key[1]})
            for key in expected} == expected


def _fresh_registry() -> Any:
    from prometheus_client import CollectorRegistry

    return CollectorRegistry()


def test_shadow_and_dry_run_do_not_combine() -> None:
    with pytest.raises(ValueError, match="do not combine"):
        Settings(replica="r", shadow=True, dry_run=True)
    assert cli.main(["remediator", "--shadow", "--dry-run", "--insecure-no-auth", "--agent-secret", "s"]) == 2


def test_the_report_refuses_bad_input_clearly(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.db"
    assert cli.main(["shadow", "report", "--database-url", f"sqlite:///{missing}"]) == 2
    assert "does not exist" in capsys.readouterr().err and not missing.exists()
    assert cli.main(["shadow", "report", "--database-url", f"sqlite:///{missing}", "--since", "yesterday"]) == 2
    assert "--since: not a Prometheus duration" in capsys.readouterr().err
    empty = tmp_path / "empty.db"
    sa.create_engine(f"sqlite:///{empty}").connect().close()
    assert cli.main(["shadow", "report", "--database-url", f"sqlite:///{empty}"]) == 2
    assert "no shadow tables" in capsys.readouterr().err


def test_a_yes_no_variable_that_is_neither_is_refused_never_read_as_off(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """EXEC_WATCHDOG_SHADOW=ture must not start a remediator that acts live."""
    monkeypatch.setenv("EXEC_WATCHDOG_SHADOW", "ture")
    assert cli.main(["remediator", "--insecure-no-auth", "--agent-secret", "s"]) == 2
    assert "EXEC_WATCHDOG_SHADOW='ture' is not a yes/no value" in capsys.readouterr().err
