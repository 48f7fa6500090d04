"""End to end, shadow mode beside the platform's own cleanup: simulated platform -> exporter -> real
Prometheus -> real Alertmanager -> remediator with --shadow (fast profile, SQLite, Redis), while the
model of Trinity's cleanup service (``PlatformCleanup``) is in charge on a 6 s cycle.

The model keeps Trinity's own bounds (an orphan at least 60 s old, a run without a session after
60 s, a slot past its timeout + 300 s, 24 hours of backlog, 120 minutes for an activity), so the
faulty rows, slots and activities are back-dated past them: both sides can act within seconds.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import redirect_stdout
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from exec_watchdog import cli
from exec_watchdog.common.contract import (
    CLAIM_RESULT,
    EXPIRE_BACKLOG,
    FAIL_NO_SESSION,
    FAIL_ORPHAN,
    FAIL_STALE_ACTIVITY,
    FINALIZE_SKIPPED,
    RECLAIM_EXPIRED_SLOT,
    RELEASE_LEAKED_SLOT,
    TERMINATE_OVERDUE,
)
from exec_watchdog.pipeline.shadow import platform_cleanup, read_verdicts
from exec_watchdog.platform_access.run_history import CLAIM_NOTICE_PREFIX
from exec_watchdog.platform_access.schema import schedule_executions
from exec_watchdog.platform_access.timestamps import format_utc, utcnow
from exec_watchdog.remediator import audit, shadow_store
from exec_watchdog.remediator.shadow_verdicts import their_row_action
from exec_watchdog.simulated_platform.cleanup_paths.context import Decision
from exec_watchdog.simulated_platform.platform_cleanup import PlatformCleanup
from exec_watchdog.simulated_platform.scheduler import Fault, Started
from exec_watchdog.testbed.trinity_stream import read_stream
from exec_watchdog.testbed.waiting import eventually
from tests.pipeline_harness import Pipeline, running_pipeline

pytestmark = pytest.mark.timeout(180)

CYCLE = 6.0  # the platform cleanup's cycle here (Trinity's: 300 s)
TIMEOUT = 300  # the simulated schedules' timeout
SLOT_ACTIONS = (RELEASE_LEAKED_SLOT, RECLAIM_EXPIRED_SLOT)
SHADOW_FLAGS = ("--shadow", "--shadow-interval", "1", "--shadow-their-cycle", f"{CYCLE:g}",
                "--shadow-their-margin", "10", "--shadow-our-grace", "15")


@pytest.fixture
def pipeline(tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> Iterator[Pipeline]:
    with running_pipeline(tmp_path / "stack", f"sqlite:///{tmp_path / 'trinity.db'}", redis_url=redis_url,
                          agents=4, timeout_seconds=TIMEOUT, remediator_flags=SHADOW_FLAGS) as p:
        yield p


def _backdate(p: Pipeline, execution_id: str, seconds: float) -> None:
    """The row started ``seconds`` earlier: past Trinity's bounds as well as the fast profile's."""
    with p.engine.begin() as conn:
        conn.execute(sa.update(schedule_executions).where(schedule_executions.c.id == execution_id)
                     .values(started_at=format_utc(utcnow() - timedelta(seconds=seconds))))


def _finished(p: Pipeline, s: Started) -> Started:
    eventually(lambda: s.execution_id in p.platform.scheduler.finished, 15, f"{s.fault} run {s.execution_id} ends")
    return s


def _subject(d: Decision) -> tuple[str, str]:
    if d.action == FAIL_STALE_ACTIVITY:
        return "activity", d.execution_id
    if d.action in SLOT_ACTIONS:
        return "slot", f"{d.agent}/{d.execution_id}"
    return "execution", d.execution_id


def _metric_counts(p: Pipeline) -> Counter[tuple[str, str]]:
    text = httpx.get(f"{p.stack.remediator_urls[0]}/metrics", timeout=5).text
    found: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "exec_watchdog_shadow_verdicts_total" and sample.value:
                found[(sample.labels["verdict"], sample.labels["action"])] += int(sample.value)
    return found


def _report(database_url: str) -> dict[str, Any]:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["shadow", "report", "--database-url", database_url, "--format", "json"]) == 0
    report: dict[str, Any] = json.loads(out.getvalue())
    return report


def test_shadow_beside_the_platform_cleanup_gives_one_verdict_each_and_changes_nothing(
        pipeline: Pipeline, redis_url: str, redis_client: redis.Redis) -> None:
    p = pipeline
    agents = p.platform.options.agent_names
    cleanup = p.loop.do(lambda: platform_cleanup(p.platform, CYCLE, lambda d: None))
    cleanup.context.claim_defer_seconds = 3.0  # the fast profile's --claim-defer (Trinity: 180 s)
    cleanup.backlog_interval_seconds = 2.0  # Trinity's capacity maintenance: 60 s
    try:
        expected = _inject_every_fault(p, redis_client, agents)
        everyone = set(expected)
        # Ours first, then theirs: a platform write before our alert fires makes the alert's series
        # vanish, and the verdict is theirs_only (the other test covers that case).
        eventually(lambda: everyone <= _our_subjects(p), 30, "the shadow remediator decides on every fault")
        p.loop.do(cleanup.start)  # its start-up sweep, then a cycle every CYCLE seconds

        def settled() -> bool:
            ours = _our_subjects(p)
            theirs = {_subject(d) for d in cleanup.decisions}
            judged = {(v["subject_kind"], v["subject_id"]) for v in read_verdicts(p.engine)}
            return everyone <= judged and (ours | theirs) <= judged

        eventually(settled, 60, "every subject either side acted on is judged")
        verdicts = read_verdicts(p.engine)
        _check_verdicts(verdicts, expected, cleanup)
        _check_nothing_changed_by_us(p, cleanup, redis_url)
        report = _report(p.stack.options.database_url)
        table = {(r["verdict"], r["action"]): r["count"] for r in report["by_action"]}
        assert table == _metric_counts(p), (report, _metric_counts(p))
        assert sum(report["totals"].values()) == len(verdicts)
    finally:
        p.loop.call(cleanup.aclose)
        p.loop.call(cleanup.context.agents.aclose)


def _inject_every_fault(p: Pipeline, redis_client: redis.Redis, agents: list[str]) -> dict[tuple[str, str], set[str]]:
    """One fault of every kind; returns each subject with the actions a verdict on it may carry."""
    a1, a2, a3, a4 = agents

    def start(agent: str, seconds: float, fault: Fault) -> Started:
        return p.start(agent, seconds, fault)

    orphan = _finished(p, start(a1, 0.3, "lose_report"))
    retained = _finished(p, start(a2, 0.3, "retained_success"))
    leaked = _finished(p, start(a3, 0.3, "leak_slot"))
    hung = start(a3, 600, "hang")
    sessionless = start(a4, 0, "no_session")
    expired = start(a4, 600, "expire_slot")
    for execution_id, seconds in ((orphan.execution_id, 90), (retained.execution_id, 90),
                                  (hung.execution_id, TIMEOUT + 10), (sessionless.execution_id, 90)):
        _backdate(p, execution_id, seconds)
    # The leaked slot, past its TTL (timeout + 300 s): Trinity's slot phase drops it as a leak.
    redis_client.zadd(f"agent:slots:{a3}", {leaked.execution_id: time.time() - TIMEOUT - 400})
    scheduler = p.platform.scheduler
    skipped = p.loop.do(lambda: scheduler.add_skipped(a1))
    queued = p.loop.do(lambda: scheduler.add_stale_queued(a2, 24 * 3600 + 5))
    activity = p.loop.do(lambda: scheduler.add_stale_activity(a3, 120 * 60 + 5))
    return {
        ("execution", orphan.execution_id): {FAIL_ORPHAN},
        ("execution", retained.execution_id): {CLAIM_RESULT},
        ("slot", f"{a3}/{leaked.execution_id}"): {RELEASE_LEAKED_SLOT},
        ("execution", hung.execution_id): {TERMINATE_OVERDUE},
        # Trinity's Phase 0 runs before its no-session sweep: a sessionless run its agent does not
        # know is failed as an orphan there; ours may be either rule's alert, whichever came first.
        ("execution", sessionless.execution_id): {FAIL_NO_SESSION, FAIL_ORPHAN},
        ("slot", f"{a4}/{expired.execution_id}"): {RECLAIM_EXPIRED_SLOT},
        ("execution", skipped): {FINALIZE_SKIPPED},
        ("execution", queued): {EXPIRE_BACKLOG},
        ("activity", activity): {FAIL_STALE_ACTIVITY},
    }


def _our_subjects(p: Pipeline) -> set[tuple[str, str]]:
    with p.engine.connect() as conn:
        return {(k, i) for k, i in conn.execute(sa.select(shadow_store.decisions.c.subject_kind,
                                                          shadow_store.decisions.c.subject_id))}


def _check_verdicts(verdicts: list[dict[str, Any]], expected: dict[tuple[str, str], set[str]],
                    cleanup: PlatformCleanup) -> None:
    keys = [(v["subject_kind"], v["subject_id"]) for v in verdicts]
    assert len(keys) == len(set(keys)), "a subject judged twice"
    by_key = {(v["subject_kind"], v["subject_id"]): v for v in verdicts}
    for key, actions in expected.items():
        v = by_key[key]
        # Both sides ended every fault: each verdict names both, with their action among the expected.
        assert v["verdict"] in ("agree", "different"), (key, actions, v)
        assert {v["our_action"], v["their_action"]} <= actions, v
        if v["our_action"] == v["their_action"]:
            assert v["verdict"] == "agree" and v["lead_seconds"] is not None, v
    assert all(d.written for d in cleanup.decisions)  # in charge: every decision is a write


def _check_nothing_changed_by_us(p: Pipeline, cleanup: PlatformCleanup, redis_url: str) -> None:
    """Every cleanup write on the platform is in their ledger; none of ours reached an agent, a
    channel or the event stream."""
    ledger = {(d.execution_id, d.action): d for d in cleanup.decisions}
    with p.engine.connect() as conn:
        rows = conn.execute(sa.select(schedule_executions)).all()
        recovered = conn.execute(sa.select(audit.decisions).where(audit.decisions.c.outcome == "recovered")).all()
        our_recoveries = conn.execute(sa.select(audit.recoveries)).all()
    assert recovered == [] and our_recoveries == []
    written = 0
    for row in rows:
        claimed = str(row.response or "").startswith(CLAIM_NOTICE_PREFIX)
        action = their_row_action(str(row.status), row.error, claimed)
        if action is None:
            continue
        written += 1
        decision = ledger.get((row.id, action))
        assert decision is not None, f"a {action} write nobody in the platform's cleanup made: {row}"
        if action != CLAIM_RESULT:
            assert row.error == decision.text, (row.error, decision)
    assert written >= 6  # orphan, claim, overdue, no-session, skipped, backlog
    terminated = {d.execution_id for d in cleanup.decisions if d.action in (TERMINATE_OVERDUE, RECLAIM_EXPIRED_SLOT)}
    for started in list(p.platform.scheduler.started.values()):
        if p.sigints(started.execution_id, started.agent):
            assert started.execution_id in terminated, f"a terminate nobody in the platform's cleanup sent: {started}"
    assert read_stream(redis_url) == [], "an announcement on trinity:events"
    assert p.redis_feed is not None and all(not p.redis_feed.for_execution(s) for s in p.platform.scheduler.started)
    assert p.redis_feed.messages == []
    assert not p.feed.events or all(e.get("type") != "watchdog_recovery" for _, e in p.feed.events)


def test_demo_refuses_a_bad_shadow_cleanup_interval() -> None:
    """Bad input gets a clear error before anything starts (flag and environment)."""
    for argv, env in ((["--shadow", "--shadow-cleanup-interval", "0"], {}),
                      (["--shadow"], {"EXEC_WATCHDOG_SHADOW_CLEANUP_INTERVAL": "-5"})):
        done = subprocess.run([sys.executable, "-m", "exec_watchdog", "demo", *argv], capture_output=True, text=True,
                              env={**_plain_env(), **env}, timeout=30)
        assert done.returncode == 2, done
        assert "--shadow-cleanup-interval must be" in done.stderr


def _plain_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("EXEC_WATCHDOG_")}

