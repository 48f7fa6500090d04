"""End to end: simulated platform -> exporter -> real Prometheus -> real Alertmanager -> remediator.

One pipeline (fast profile, SQLite, capacity slots and announcements in Redis) is shared by the
module; every test starts fresh executions on an agent of its own, so tests do not see each
other's alerts. Nothing is mocked: the executions are real processes, the alerts come from the
rendered rules, and the remediator is the `exec-watchdog remediator` command.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from typing import Any

import psutil
import pytest
import sqlalchemy as sa

from exec_watchdog.alerts.profiles import duration_seconds
from exec_watchdog.grafana.queries import labelled_queries
from exec_watchdog.platform_access.run_history import RECOVERED_NOTICE
from exec_watchdog.platform_access.timestamps import parse_utc
from exec_watchdog.remediator import texts
from exec_watchdog.remediator.audit import recoveries
from exec_watchdog.testbed.waiting import eventually, holds
from tests.pipeline_harness import Pipeline, running_pipeline

pytestmark = pytest.mark.timeout(600)

LOST, RESTARTED, OVERDUE, LATE, UNREACHABLE, SILENCED, RESOLVED, LONG, DASHBOARD, RETAINED, HELD = (
    f"agent-{i:03d}" for i in range(1, 12))
LEAKY, EXPIRY, GONE = (f"agent-{i:03d}" for i in range(12, 15))  # the slot paths
SLACK = 4.0  # a loaded 2-core machine: scheduling, SQLite and HTTP on top of the pipeline's floor
# Trinity's text, after the agent's last error when it still has one ("[type] message. Cleanup: ").
OVERDUE_RE = re.compile(r"(?:\[[^\]]*\] .*\. Cleanup: )?"
                        r"Execution auto-terminated after (\d+) minutes by watchdog \(exceeded timeout of (\d+)s\)",
                        re.DOTALL)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Pipeline]:
    workdir = tmp_path_factory.mktemp("e2e")
    with running_pipeline(workdir / "stack", f"sqlite:///{workdir / 'trinity.db'}", redis_url=redis_url,
                          agents=14) as p:
        yield p


def assert_recovered_once(p: Pipeline, execution_id: str, agent: str, event_action: str,
                          reason: str | None = None) -> None:
    """Slot released, and exactly one announcement (WebSocket and Redis) once the alert is over."""
    # The row is failed first; the slot release and the announcement follow it.
    eventually(lambda: execution_id not in p.held(agent), 5, f"the slot of {execution_id} is released")
    # After the resolved notification nothing more is sent for this alert: count then.
    eventually(lambda: any(d["alert_status"] == "resolved" for d in p.decisions(execution_id)), 20,
               f"the resolved notification of {execution_id} reached the remediator")
    events = p.announcements(execution_id)
    assert len(events) == 1, events
    event = events[0]
    assert event["type"] == "watchdog_recovery"
    assert event["agent_name"] == agent
    assert event["action"] == event_action
    assert event["reason"] == (p.row(execution_id).error if reason is None else reason)
    assert p.redis_feed is not None
    assert p.redis_feed.for_execution(execution_id) == [event]
    recovered = [d for d in p.decisions(execution_id) if d["outcome"] == "recovered"]
    assert len(recovered) == 1, recovered


def test_lost_report_is_failed_after_the_agent_forgets_it(pipeline: Pipeline) -> None:
    """A run whose completion report is lost stays 'recently completed' on its agent for a while;
    once the agent forgets it, it is failed, its slot released and announced once, within the
    fast profile's floor."""
    p = pipeline
    started = p.start(LOST, 0.5, "lose_report")
    assert started.execution_id in p.held(LOST)
    ended = eventually(lambda: p.fault_at(started.execution_id), 10, "the process ended, report lost")
    floor = p.timing.orphan_floor(0.5, p.completed_window)

    row = eventually(lambda: p.failed(started.execution_id), floor + SLACK + 5, "the lost run is failed")

    assert row.error == texts.orphan_text(LOST, reports_pending=True, no_retained_result=True)
    latency = (parse_utc(row.completed_at) - ended).total_seconds()
    assert p.completed_window <= latency <= floor + SLACK, (latency, floor)
    assert_recovered_once(p, started.execution_id, LOST, "orphan_recovered")


def test_lost_report_of_a_retained_success_is_claimed_as_success(pipeline: Pipeline) -> None:
    """The agent kept the result of a run whose report was lost (Trinity #2944): the watchdog writes
    the run's success, never failed, releases its slot and announces result_recovered once."""
    p = pipeline
    started = p.start(RETAINED, 0.5, "retained_success")
    eventually(lambda: p.fault_at(started.execution_id), 10, "the run ended, its report lost")
    defer = float(p.stack.settings["claim_defer_seconds"])
    deadline = p.timing.orphan_floor(0.5, p.completed_window) + defer + SLACK + 5

    def written() -> Any:
        row = p.row(started.execution_id)
        return row if row.status != "running" else None

    row: Any = eventually(written, deadline, "the run's retained result is claimed")

    assert row.status == "success" and row.error is None, row
    assert row.response.startswith(RECOVERED_NOTICE)
    assert_recovered_once(p, started.execution_id, RETAINED, "result_recovered",
                          "terminal claimed from the agent's retained result: status=success")


def test_a_dispatch_held_in_the_backend_is_never_failed(pipeline: Pipeline) -> None:
    """While the backend holds a dispatch the agent knows nothing of it, yet its in-flight marker is
    alive (Trinity #2433): no alert, no decision; it then runs and is reported normally."""
    p = pipeline
    hold = p.platform.options.hold_seconds
    started = p.start(HELD, 0.5, "inflight")
    marker = f'exec_watchdog_execution_dispatch_inflight{{execution_id="{started.execution_id}"}} == 1'
    eventually(lambda: p.series(marker), hold, "the exporter sees the dispatch in flight")
    assert hold > p.timing.orphan_min_age + p.timing.detection("fail_orphan"), "the hold must outlast detection"

    eventually(lambda: p.status(started.execution_id) == "success", hold + 15, "the held run completes normally")

    assert p.alerts("ExecWatchdogExecutionOrphaned", agent=HELD) == []
    assert p.decisions(started.execution_id) == []
    assert p.recovery(started.execution_id) is None


def test_agent_restart_orphans_every_run_it_forgot(pipeline: Pipeline) -> None:
    """An agent restart kills its processes unreported: each of its runs is failed once."""
    p = pipeline
    runs = [p.start(RESTARTED, 120) for _ in range(3)]
    p.restart_agent(RESTARTED)
    # Forgotten at once, but the rule waits until a run is orphan_min_age old.
    floor = p.timing.orphan_min_age + p.timing.detection("fail_orphan")

    for run in runs:
        row = eventually(partial(p.failed, run.execution_id), floor + SLACK + 5, "forgotten run failed")
        assert row.error == texts.orphan_text(RESTARTED, reports_pending=True, no_retained_result=True)
        assert (parse_utc(row.completed_at) - parse_utc(row.started_at)).total_seconds() <= floor + SLACK
    for run in runs:
        assert_recovered_once(p, run.execution_id, RESTARTED, "orphan_recovered")


def test_overdue_run_is_terminated_on_its_agent_and_failed(pipeline: Pipeline) -> None:
    """A run past its timeout is terminated for real (its process is gone), then failed with
    Trinity's auto-terminated message."""
    p = pipeline
    p.set_timeout(OVERDUE, 4)
    started = p.start(OVERDUE, 3600, "hang")
    pid = eventually(lambda: p.pid(started.execution_id, OVERDUE), 5, "the process runs")
    process = psutil.Process(pid)
    assert process.is_running()
    crossed = parse_utc(p.row(started.execution_id).started_at).timestamp() + 4
    floor = p.timing.overdue_floor()

    row = eventually(lambda: p.failed(started.execution_id), 4 + floor + SLACK + 5, "the overdue run is failed")

    match = OVERDUE_RE.fullmatch(row.error or "")
    assert match, row.error
    assert match.group(2) == "4"
    assert parse_utc(row.completed_at).timestamp() - crossed <= floor + SLACK
    eventually(lambda: not psutil.pid_exists(pid) or process.status() == psutil.STATUS_ZOMBIE, 5,
               "the real process is gone")
    assert not [q for q in psutil.process_iter(["pid"]) if _pgid(q) == pid], "a process of its group survived"
    assert_recovered_once(p, started.execution_id, OVERDUE, "auto_terminated")


def _pgid(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except (ProcessLookupError, PermissionError):
        return None


def test_report_arriving_late_is_never_failed(pipeline: Pipeline) -> None:
    """A report that arrives while the agent still lists the run as recently completed wins: the
    watchdog never touches it."""
    p = pipeline
    started = p.start(LATE, 0.5, "late_report")

    eventually(lambda: p.status(started.execution_id) == "success", 10, "the late report is written")

    assert p.decisions(started.execution_id) == []
    assert p.recovery(started.execution_id) is None
    assert p.announcements(started.execution_id) == []
    eventually(lambda: started.execution_id not in p.held(LATE), 5, "the platform released the slot itself")


def test_unreachable_agent_is_left_alone_and_recovered_only_if_still_unknown(pipeline: Pipeline) -> None:
    """While an agent does not answer, its runs are neither orphaned nor terminated (AgentUnreachable
    fires instead); when it answers again only the run it really forgot is failed."""
    p = pipeline
    forgotten = p.start(UNREACHABLE, 600)
    p.stop_agent(UNREACHABLE)
    eventually(lambda: p.alerts("ExecWatchdogAgentUnreachable", agent=UNREACHABLE), 20,
               "ExecWatchdogAgentUnreachable fires in Alertmanager")
    p.restart_agent(UNREACHABLE)  # forgets `forgotten`, but nobody can ask it
    kept = p.start(UNREACHABLE, 600)

    holds(lambda: p.status(forgotten.execution_id) == "running", p.timing.detection("fail_orphan") + 3,
          "a run of an unreachable agent stays running")
    assert p.alerts("ExecWatchdogExecutionOrphaned", agent=UNREACHABLE) == []
    assert p.series(f'exec_watchdog_execution_agent_known{{agent="{UNREACHABLE}"}}') == []
    assert p.decisions(forgotten.execution_id) == []

    p.resume_agent(UNREACHABLE)
    row = eventually(lambda: p.failed(forgotten.execution_id), 20, "the forgotten run is failed once reachable")
    assert row.error == texts.orphan_text(UNREACHABLE, reports_pending=True, no_retained_result=True)
    eventually(lambda: p.series(f'exec_watchdog_execution_agent_known{{execution_id="{kept.execution_id}"}} == 1'),
               10, "the agent reports the run it still has")
    assert p.status(kept.execution_id) == "running"
    assert p.decisions(kept.execution_id) == []
    assert kept.execution_id in p.held(UNREACHABLE)


def test_a_leaked_slot_is_released_once_and_its_row_left_alone(pipeline: Pipeline) -> None:
    """A run reported normally whose writer never released its slot: after the 15 s grace the slot
    (exactly that member and its hash) is released and announced once; the row stays a success."""
    p = pipeline
    started = p.start(LEAKY, 0.5, "leak_slot")
    eventually(lambda: p.status(started.execution_id) == "success", 20, "the leaky run is reported")
    assert started.execution_id in p.held(LEAKY)
    eventually(lambda: started.execution_id not in p.held(LEAKY), 15 + p.timing.detection("fail_orphan") + SLACK + 5,
               "the leaked slot is released")
    assert p.status(started.execution_id) == "success"
    assert_recovered_once(p, started.execution_id, LEAKY, "slot_released",
                          "leaked slot: the execution row is 'success'; exactly that slot released")


def test_an_expired_slot_of_a_run_its_agent_still_runs_loses_only_its_slot(pipeline: Pipeline) -> None:
    """A slot taken already past its TTL while the agent runs the execution: the slot is removed, the
    run keeps running and reports its own success (Trinity's "the agent lists it: leave it")."""
    p = pipeline
    started = p.start(EXPIRY, 8, "expire_slot")
    eventually(lambda: started.execution_id not in p.held(EXPIRY), 20, "the expired slot is removed")
    assert p.status(started.execution_id) == "running"
    eventually(lambda: p.status(started.execution_id) == "success", 30, "the run reports its own success")
    [decision] = [d for d in p.decisions(started.execution_id) if d["outcome"] == "recovered"]
    assert "still lists the run" in decision["reason"]


def test_a_run_whose_agent_stays_unreachable_past_its_slot_ttl_is_failed_with_trinitys_497_text(
        pipeline: Pipeline) -> None:
    """Only once the agent has not answered for slot_unreachable_for (Trinity: one unanswered call)."""
    p = pipeline
    started = p.start(GONE, 600)
    p.stop_agent(GONE)
    eventually(lambda: p.alerts("ExecWatchdogAgentUnreachable", agent=GONE), 20, "the agent is seen unreachable")
    # Its slot ages past its TTL while the agent is away (the score is the acquire time).
    aged = started.started_at - timedelta(seconds=started.timeout_seconds + 400)
    p.platform.slots.acquire(GONE, started.execution_id, aged, "aged", started.timeout_seconds)
    unreachable_for = duration_seconds(str(p.stack.settings["slot_unreachable_for"]))
    try:
        row = eventually(lambda: p.failed(started.execution_id), unreachable_for + 10 + SLACK, "the run is failed")
    finally:
        p.resume_agent(GONE)
    assert row.error == texts.slot_unreachable_text(GONE)
    eventually(lambda: started.execution_id not in p.held(GONE), 5, "its slot is released")
    assert [d["remediation"] for d in p.decisions(started.execution_id) if d["outcome"] == "recovered"] == [
        "reclaim_slot_unreachable"]


def test_silence_pauses_remediation_until_it_is_removed(pipeline: Pipeline) -> None:
    """With remediation=~".+" silenced the orphan alert fires but nothing is done; removing the
    silence lets the remediation happen."""
    p = pipeline
    silence = p.create_silence("e2e: pause remediation", remediation=".+")
    try:
        run = p.start(SILENCED, 600)
        p.restart_agent(SILENCED)

        def suppressed() -> bool:
            alerts = p.alerts("ExecWatchdogExecutionOrphaned", execution_id=run.execution_id)
            return any(silence in a["status"]["silencedBy"] for a in alerts)

        eventually(suppressed, 20, "the orphan alert is firing and silenced")
        holds(lambda: p.status(run.execution_id) == "running", p.timing.repeat_interval / 2 + 1,
              "a silenced orphan stays running")
        assert p.decisions(run.execution_id) == []
    finally:
        p.delete_silence(silence)

    row = eventually(lambda: p.failed(run.execution_id), 20, "remediated once the silence is gone")
    assert row.error == texts.orphan_text(SILENCED, reports_pending=True, no_retained_result=True)
    assert_recovered_once(p, run.execution_id, SILENCED, "orphan_recovered")


def test_resolved_notification_is_recorded_and_changes_nothing(pipeline: Pipeline) -> None:
    """The resolved notification after a recovery is audited as ignored and leaves the row as the
    recovery wrote it."""
    p = pipeline
    run = p.start(RESOLVED, 600)
    p.restart_agent(RESOLVED)
    recovered = eventually(lambda: p.failed(run.execution_id), 20, "the orphan is failed")

    resolved = eventually(lambda: [d for d in p.decisions(run.execution_id) if d["alert_status"] == "resolved"], 20,
                          "the resolved notification is audited")

    assert {d["outcome"] for d in resolved} == {"ignored"}
    assert all("resolved" in d["reason"] for d in resolved)
    after = p.row(run.execution_id)
    assert (after.status, after.error, after.completed_at) == (recovered.status, recovered.error,
                                                               recovered.completed_at)
    assert len(p.announcements(run.execution_id)) == 1




# Runs only some runs are ever in: finished but unreported, held in the backend.
RARE_STATES = ("exec_watchdog_execution_recently_completed", "exec_watchdog_execution_dispatch_inflight",
               "exec_watchdog_execution_unknown_since_timestamp_seconds",  # only until the orphan is recovered
               "exec_watchdog_slot_",  # slots are published only when expiring or leaked
               "exec_watchdog_execution_stale_overrun_seconds", "exec_watchdog_execution_sessionless_runtime_seconds",
               # rows Trinity's cleanup ends: published only once they are about to fire
               "exec_watchdog_execution_queued_seconds", "exec_watchdog_execution_skipped_unfinalized_seconds",
               "exec_watchdog_activity_started_seconds",
               # verdicts exist only while the remediator runs with --shadow beside the platform's cleanup
               "exec_watchdog_shadow_")


def sparse(expr: str) -> bool:
    """Panels empty by design when nothing is wrong at this moment: alerts listed only while some
    fire, annotations that mark moments only when something happened, and counts of runs in a
    rare state."""
    # The advised timeout needs advice_min_runs successful runs of one schedule in the window:
    # tests/test_e2e_timeouts.py runs schedules for it and checks those panels with data.
    return (("ALERTS{" in expr and "or vector(0)" not in expr) or expr.rstrip().endswith("> 0")
            or any(name in expr for name in RARE_STATES) or "timeout_seconds:advised" in expr)


def test_every_dashboard_query_runs_on_the_real_prometheus(pipeline: Pipeline) -> None:
    """Every Grafana panel query is valid on the real Prometheus, and the ones that always have
    something to show do once something happened: a run going on, a recovery, an agent error."""
    p = pipeline
    p.start(LONG, 600)  # something running, for the per-execution panels
    short = p.start(LONG, 0.5)  # something completed, for the run-history panels
    eventually(lambda: p.status(short.execution_id) == "success", 20, "a short run completed")
    orphan = p.start(DASHBOARD, 600)
    p.restart_agent(DASHBOARD)
    eventually(lambda: p.failed(orphan.execution_id), 20, "a recovery happened")
    p.stop_agent(DASHBOARD)
    try:
        eventually(lambda: p.series(f'exec_watchdog_exporter_agent_poll_errors_total{{agent="{DASHBOARD}"}}'), 10,
                   "an agent poll error is counted")
    finally:
        p.resume_agent(DASHBOARD)
    eventually(lambda: p.series(f'exec_watchdog_execution_runtime_seconds{{agent="{LONG}"}}'), 10,
               "the long run is scraped")
    eventually(lambda: p.series(f'exec_watchdog_schedule:successful_runs:window{{agent="{LONG}"}}'), 15,
               "the completed run is in the recorded run history")

    # rate() and increase() need two samples of a new series: allow a few scrapes for them.
    deadline = time.monotonic() + 10
    empty = []
    for where, expr in labelled_queries():
        while True:
            body = p.query(expr)
            assert body["status"] == "success", (where, expr, body)
            if body["data"]["result"] or sparse(expr):
                break
            if time.monotonic() > deadline:
                empty.append(f"{where}: {expr}")
                break
            time.sleep(0.5)
    assert empty == [], "queries without data:\n" + "\n".join(empty)


def test_every_recovery_was_announced_exactly_once(pipeline: Pipeline) -> None:
    """Across the whole module: one announcement per recovered execution, slot released, done."""
    p = pipeline
    with p.engine.connect() as conn:
        rows = conn.execute(sa.select(recoveries)).all()
    assert rows, "some recoveries happened in this module"
    for row in rows:
        assert row.slot_released_at is not None and row.announced_at is not None, row
        assert len(p.announcements(row.execution_id)) == 1, row.execution_id
        assert row.execution_id not in p.held(row.agent_name)
    assert p.feed.errors == []


def test_no_child_crashed(pipeline: Pipeline) -> None:
    """The exporter, remediator, Prometheus and Alertmanager are all still running."""
    pipeline.stack.children.check()
