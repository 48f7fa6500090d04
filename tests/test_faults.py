"""Faults, end to end: the pipeline keeps its promises while its parts break.

One pipeline per module (fast profile, real Prometheus, two clustered Alertmanagers, the
remediator, a PostgreSQL and a Redis of our own that we stop, pause and resume), and one agent per
test. Each test breaks one thing — the database, Redis, an agent (hangs, answers garbage,
restarts), the remediator (SIGKILL mid-batch), one Alertmanager of the pair — then checks the
invariants once everything is back:

- every execution that was truly orphaned or overdue (by the scheduler's record of its fault) is
  recovered;
- no execution that completed normally, or still runs as it should, is failed by the watchdog;
- each recovery has exactly one outbox row with its slot released and its announcement made, and
  exactly one announcement on the Redis relay;
- no slot is held for an execution that is no longer running, and none is missing for one that is.

Two more things without the pipeline: the invariant checker itself, shown each kind of breakage;
and one remediator whose announcement relay stops answering while an event is in flight.

The servers we break, the stack-child helpers and the invariant checker live in
``exec_watchdog.testbed``, shared with ``bench/soak.py``, which runs the same faults at random for a long while.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import psutil
import pytest
import redis
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from exec_watchdog.common.contract import RemediatorMetric
from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.slots import RedisSlots, SqlSlots, slot_metadata
from exec_watchdog.platform_access.timestamps import utcnow
from exec_watchdog.remediator import audit
from exec_watchdog.remediator.audit import recoveries
from exec_watchdog.simulated_platform.agent_server import serve_agents
from exec_watchdog.simulated_platform.scheduler import Fault, Started
from exec_watchdog.testbed.announcements import CHANNEL, Announcements
from exec_watchdog.testbed.breakable_servers import PostgresProcess, RedisProcess
from exec_watchdog.testbed.invariants import Findings, check_invariants
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.platform_rows import insert_execution
from exec_watchdog.testbed.remediator_harness import SECRET, TOKEN
from exec_watchdog.testbed.servers import free_port
from exec_watchdog.testbed.stack_children import kill_child, restart_child
from exec_watchdog.testbed.waiting import eventually, holds_until
from tests.pipeline_harness import LoopThread, Pipeline, running_pipeline

pytestmark = pytest.mark.timeout(300)

SLACK = 5.0  # a loaded 2-core machine on top of the pipeline's floor


def test_invariant_checker_flags_each_broken_invariant(tmp_path: Path) -> None:
    """The checker the fault tests and the soak rely on: given a database, slots and relay counts
    with one execution per kind of problem, it names each one, and only those."""
    engine = db.create_engine(f"sqlite:///{tmp_path / 'trinity.db'}")
    db.create_platform_tables(engine, slot_metadata)
    audit.create_tables(engine)
    slots = SqlSlots(engine)
    now = utcnow()
    fault = now - timedelta(seconds=30)
    # id: (fault, status, slot held, recovery row as (recovered at, announced), relay events)
    cases: dict[str, tuple[Fault, datetime | None, str, bool, tuple[datetime, bool] | None, int]] = {
        "fine": ("lose_report", fault, "failed", False, (now, True), 1),
        "running": ("none", None, "running", True, None, 0),
        "completed": ("none", None, "success", False, None, 0),
        "hang-not-yet": ("hang", None, "running", True, None, 0),
        "false-kill": ("none", None, "failed", False, (now, True), 1),
        "too-early": ("lose_report", fault, "failed", False, (fault - timedelta(seconds=5), True), 1),
        "twice": ("lose_report", fault, "failed", False, (now, True), 2),
        "pending": ("lose_report", fault, "running", True, None, 0),
        "unfinished": ("lose_report", fault, "failed", True, (now, False), 0),
        "silent": ("lose_report", fault, "failed", False, (now, True), 0),
        "leak": ("none", None, "success", True, None, 0),
        "stolen": ("none", None, "running", False, None, 0),
    }
    started, fault_at, announced = {}, {}, {}
    with engine.begin() as conn:
        for execution_id, (kind, lost_at, status, _, recovery, events) in cases.items():
            started[execution_id] = Started(execution_id, "a1", kind, now - timedelta(seconds=60), 3600)
            insert_execution(conn, execution_id, "a1", age_seconds=60, status=status,
                             error="recovered by watchdog" if recovery else None)
            if lost_at is not None:
                fault_at[execution_id] = lost_at
            if recovery is not None:
                recovered_at, done = recovery
                audit.open_recoveries(conn, [audit.Recovery(execution_id, "a1", "fail_orphan", "lost", "fp", 60.0,
                                                            recovered_at, recovered_at)], "r1", 30)
                if done:
                    audit.mark_finished(conn, [execution_id], now, "r1")
            announced[execution_id] = events
    for execution_id, (_, _, _, slot, _, _) in cases.items():
        if slot:
            slots.acquire("a1", execution_id, now, "m", 3600)

    f = check_invariants(engine, slots, started, fault_at, announced, now=now)

    assert f.checked == len(cases)
    assert sorted(f.false_kills) == ["false-kill", "too-early"]
    assert f.duplicates == ["twice"]
    assert f.pending == ["pending"]
    assert f.unfinished == ["unfinished"]
    assert f.unannounced == ["silent"]
    assert f.leaked_slots == ["a1/leak"]
    assert f.stolen_slots == ["a1/stolen"]
    assert sorted(f.lost) == sorted(i for i, c in cases.items() if c[1] is not None)
    assert f.time_to_recovery["fine"] == pytest.approx(30.0)
    assert set(f.unsettled()) == {"false_kills", "duplicates", "pending", "unfinished", "unannounced",
                                  "leaked_slots", "stolen_slots"}
    engine.dispose()


# -- the world these tests break ------------------------------------------------------------------

@dataclass
class World:
    p: Pipeline
    postgres: PostgresProcess
    redis: RedisProcess
    announcements: Announcements

    def records(self) -> tuple[dict[str, Started], dict[str, datetime]]:
        scheduler = self.p.platform.scheduler
        return self.p.loop.do(lambda: (dict(scheduler.started), dict(scheduler.fault_at)))

    def findings(self, ids: Iterable[str] | None = None) -> Findings:
        started, fault_at = self.records()
        return check_invariants(self.p.engine, self.p.platform.slots, started, fault_at,
                                self.announcements.snapshot(), ids=ids)

    def settle(self, runs: Iterable[Started], timeout: float) -> Findings:
        """Wait until every invariant holds for ``runs``; fail at once on a violation."""
        ids = [r.execution_id for r in runs]
        last = Findings()

        def settled() -> bool:
            nonlocal last
            last = self.findings(ids)
            assert not last.violations(), last.describe()
            return not last.unsettled()

        try:
            eventually(settled, timeout, "every invariant holds", interval=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{last.describe()}") from None
        return last

    def start(self, agent: str, seconds: float, fault: Fault = "none", n: int = 1) -> list[Started]:
        return [self.p.start(agent, seconds, fault) for _ in range(n)]

    def set_agent_fault(self, agent: str, mode: str) -> None:
        server = self.p.platform.server
        self.p.loop.do(lambda: server.agents[agent].set_fault(mode))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("faults")
    with PostgresProcess() as postgres, RedisProcess() as rds, \
            running_pipeline(workdir / "stack", postgres.url, redis_url=rds.url, agents=12, alertmanagers=2,
                             # Every run here is older than 1 s when it is lost: a Redis outage (the
                             # in-flight markers unreadable) holds none of them, so the outages below
                             # test the rest of the path. The hold itself: test_remediator_claim.py.
                             remediator_flags=("--inflight-max-age", "1"),
                             exporter_flags=("--inflight-max-age", "1")) as p:
        announcements = Announcements(rds.url)
        try:
            yield World(p, postgres, rds, announcements)
        finally:
            announcements.close()


# -- the faults -----------------------------------------------------------------------------------

DB_AGENT, DB_OVERDUE, REDIS_AGENT, REDIS_OVERDUE, HANG, GARBAGE, RESTART, KILLED_A, KILLED_B, HA, CONTROL = (
    f"agent-{i:03d}" for i in range(1, 12))
DB_OUTAGE = 12.0  # at most, waiting for what must happen while the database is down
REDIS_OUTAGE = 30.0  # at most, after the rows are failed: the remediator's Redis timeouts (5 s) and a sweep


def orphan_deadline(world: World) -> float:
    """Seconds from an agent forgetting a run to its recovery, at worst (fast profile)."""
    t = world.p.timing
    return max(t.orphan_min_age, world.p.completed_window) + t.detection("fail_orphan") + SLACK


def test_agent_restart_recovers_what_it_forgot_and_nothing_that_completed(world: World) -> None:
    """An agent restarting with a mix of work: its unfinished runs (long, hung, whose report was
    lost) are recovered once each; runs that completed before it, or report late, are not."""
    w = world
    completed = w.start(RESTART, 0.3, n=2)
    late = w.start(RESTART, 0.3, "late_report")
    lost = w.start(RESTART, 0.3, "lose_report")
    victims = w.start(RESTART, 600, n=2) + w.start(RESTART, 3600, "hang")
    eventually(lambda: all(w.p.status(r.execution_id) == "success" for r in completed), 10, "short runs completed")
    w.p.restart_agent(RESTART)
    after = w.start(RESTART, 600)  # started after the restart: must be left alone

    w.settle(completed + late + lost + victims + after, orphan_deadline(w) + 10)

    assert all(w.p.status(r.execution_id) == "success" for r in completed + late)
    for run in victims + lost:
        assert w.p.failed(run.execution_id) is not None
        assert w.announcements.count(run.execution_id) == 1
    assert w.p.status(after[0].execution_id) == "running"
    assert after[0].execution_id in w.p.held(RESTART)


def remediator_answers(world: World, code: str) -> float:
    """How many webhook requests the (first) remediator answered with ``code``, from its /metrics."""
    text = httpx.get(f"{world.p.stack.remediator_urls[0]}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == RemediatorMetric.REQUESTS and sample.labels.get("code") == code:
                return float(sample.value)
    return 0.0


def push_orphan_alert(world: World, run: Started, ends_in: float) -> None:
    """Hand Alertmanager the orphan alert for ``run`` as Prometheus would (same labels, no job and
    instance); ``ends_in`` <= 0 resolves it."""
    now = utcnow()
    alert = {"labels": {"alertname": "ExecWatchdogExecutionOrphaned", "agent": run.agent,
                        "execution_id": run.execution_id, "schedule_id": f"sim-{run.agent}",
                        "remediation": "fail_orphan", "severity": "critical"},
             "annotations": {"summary": "pushed by tests/test_faults.py"},
             "startsAt": now.isoformat(), "endsAt": (now + timedelta(seconds=max(0.0, ends_in))).isoformat()}
    for url in world.p.stack.alertmanager_urls:
        httpx.post(f"{url}/api/v2/alerts", json=[alert], timeout=5).raise_for_status()


def test_database_outage_delays_recoveries_and_loses_none(world: World) -> None:
    """PostgreSQL down (every connection cut) while runs are forgotten, a report is lost and a run
    crosses its timeout: nothing is failed meanwhile, and a notification that arrives during the
    outage is answered 503 (Alertmanager retries it); once the database is back each lost run is
    recovered once, and runs that outlive the outage complete normally."""
    w = world
    w.p.set_timeout(DB_OVERDUE, 6)  # the hung run crosses it during the outage
    forgotten = w.start(DB_AGENT, 600, n=2)
    w.p.restart_agent(DB_AGENT)
    outlive = w.start(DB_AGENT, DB_OUTAGE + 8, n=2) + w.start(DB_AGENT, DB_OUTAGE + 8, "late_report")
    kept = w.start(DB_AGENT, 600)
    lost_report = w.start(DB_AGENT, 0.5, "lose_report")
    overdue = w.start(DB_OVERDUE, 3600, "hang")
    lost = forgotten + lost_report + overdue
    slots_before = {r.execution_id for r in outlive + kept + lost}
    retries_before = remediator_answers(w, "503")

    w.postgres.stop()
    try:
        # The exporter cannot see the runs now, so no rule fires; an alert that is already in
        # Alertmanager still reaches the remediator, which cannot act and asks to be retried.
        push_orphan_alert(w, forgotten[0], ends_in=120)
        eventually(lambda: remediator_answers(w, "503") > retries_before, DB_OUTAGE / 2,
                   "the remediator answers 503 to a notification it cannot act on")
        # The outage lasts until every lost run is truly lost (the hung one past its timeout) and
        # the remediator has refused Alertmanager's retry once more after that.
        overdue_at = overdue[0].started_at + timedelta(seconds=6)

        def all_lost() -> bool:
            _, fault_at = w.records()
            now = utcnow()
            return now >= overdue_at and all(
                r.execution_id in fault_at and fault_at[r.execution_id] <= now for r in forgotten + lost_report)

        refusals_once_lost: list[float] = []

        def refused_again_once_all_lost() -> bool:
            if not refusals_once_lost:
                if all_lost():
                    refusals_once_lost.append(remediator_answers(w, "503"))
                return False
            return remediator_answers(w, "503") > refusals_once_lost[0]

        holds_until(lambda: not any(w.announcements.count(r.execution_id) for r in lost),
                    refused_again_once_all_lost, DB_OUTAGE, "no recovery is announced while the database is down",
                    "every lost run is lost and the remediator refused a notification again")
        held = w.p.held(DB_AGENT) | w.p.held(DB_OVERDUE)
        assert slots_before <= held
    finally:
        w.postgres.start()

    try:
        w.settle(outlive + kept + lost, orphan_deadline(w) + 15)
    finally:
        push_orphan_alert(w, forgotten[0], ends_in=0)
    for run in lost:
        assert w.p.failed(run.execution_id) is not None
    assert w.p.status(kept[0].execution_id) == "running"
    eventually(lambda: all(w.p.status(r.execution_id) == "success" for r in outlive), 20,
               "runs that outlived the outage completed normally")
    w.settle(outlive + kept + lost, 5)


def test_redis_outage_finishes_every_recovery_exactly_once_afterwards(world: World) -> None:
    """Redis (slots and the announcement relay) stops answering while runs are forgotten and a run
    crosses its timeout: the rows are failed, but the slot releases and announcements stay owed
    (the webhook answers 503, the sweep retries) until Redis answers again; then each is released
    and announced exactly once, and the run still going keeps its slot."""
    w = world
    w.p.set_timeout(REDIS_OVERDUE, 5)
    forgotten = w.start(REDIS_AGENT, 600, n=3)
    w.p.restart_agent(REDIS_AGENT)
    kept = w.start(REDIS_AGENT, 600)
    overdue = w.start(REDIS_OVERDUE, 3600, "hang")
    lost = forgotten + overdue

    w.redis.pause()
    try:
        # The database still works: the watchdog fails the rows, then owes the rest for longer
        # than its Redis clients wait (5 s), so the first attempts fail and are retried.
        eventually(lambda: all(w.p.recovery(r.execution_id) for r in lost), orphan_deadline(w) + 2,
                   "the lost runs are failed while Redis is down")
        # A finish that fails gives its claim up (the sweep then takes it again): once every claim
        # has changed, every recovery's attempt to finish has failed at least once.
        first_claims = {r.execution_id: w.p.recovery(r.execution_id).claim_expires_at for r in lost}
        holds_until(lambda: all(w.p.recovery(r.execution_id).announced_at is None for r in lost),
                    lambda: all(w.p.recovery(i).claim_expires_at != c for i, c in first_claims.items()),
                    REDIS_OUTAGE, "no recovery counts as announced while Redis is down",
                    "every recovery's attempt to finish failed")
    finally:
        w.redis.resume()

    w.settle(lost + kept, 30)
    assert w.p.status(kept[0].execution_id) == "running"
    assert kept[0].execution_id in w.p.held(REDIS_AGENT)


def test_misbehaving_agents_are_never_taken_for_orphans(world: World) -> None:
    """An agent that hangs (holds every request) and one that answers garbage (a cut-off 200):
    their runs are neither orphaned nor terminated while they misbehave, not even the run each
    really forgot or the runs past their timeout; once they answer properly the forgotten runs
    are recovered and nothing else is touched."""
    w = world
    faults = {HANG: "hang", GARBAGE: "garbage"}
    forgotten, kept, short, overdue = [], [], [], []
    for agent in faults:
        forgotten += w.start(agent, 600)
        w.p.restart_agent(agent)
        kept += w.start(agent, 600)
        short += w.start(agent, 2) + w.start(agent, 1, "late_report")  # they complete during the fault
    # The same faults, a little later, on an agent that answers: once the watchdog has recovered
    # both of its runs, it had every chance to act on the misbehaving agents' runs too.
    control = w.start(CONTROL, 600)
    w.p.restart_agent(CONTROL)
    for agent, mode in faults.items():
        w.set_agent_fault(agent, mode)
    try:
        for agent in faults:
            overdue += w.start(agent, 3600, "hang")
            w.p.set_timeout(agent, 4)  # every run here passes its timeout: still nothing may be terminated
        control += w.start(CONTROL, 3600, "hang")
        w.p.set_timeout(CONTROL, 4)
        holds_until(lambda: all(w.p.status(r.execution_id) == "running" for r in forgotten + kept + overdue),
                    lambda: all(w.p.recovery(r.execution_id) for r in control), orphan_deadline(w) + 30,
                    "nothing is failed while the agents misbehave",
                    "the same faults on an agent that answers are recovered")
        # Nor is a remediation on its way for them: no such alert, not even a pending one.
        assert w.p.series(f'ALERTS{{agent=~"{HANG}|{GARBAGE}",remediation=~".+"}}') == []
        assert [w.announcements.count(r.execution_id) for r in forgotten] == [0, 0]
        assert all(w.p.status(r.execution_id) == "success" for r in short)
        for agent in faults:
            w.p.set_timeout(agent, 300)
    finally:
        for agent in faults:
            w.set_agent_fault(agent, "none")

    # Only the forgotten runs are lost now: with the timeout back at 300 s no run is overdue.
    w.settle(forgotten + kept + short + overdue + control, orphan_deadline(w) + 5)
    assert all(w.p.failed(r.execution_id) is not None for r in forgotten)
    assert all(w.p.status(r.execution_id) == "running" for r in kept + overdue)


def test_remediator_killed_mid_batch_is_finished_after_its_restart(world: World) -> None:
    """Six runs are forgotten at once; the remediator is SIGKILLed as soon as the first of them is
    failed (Redis held back for a moment, so the kill lands between the transition and the slot
    release), then started again: every run ends recovered with one slot release and one
    announcement — the half-done ones finished by the sweep once the dead process's claims expire."""
    w = world
    victims = w.start(KILLED_A, 600, n=3) + w.start(KILLED_B, 600, n=3)
    w.p.restart_agent(KILLED_A)
    w.p.restart_agent(KILLED_B)
    kept = w.start(KILLED_A, 600)

    w.redis.pause()
    try:
        first = eventually(lambda: [r for r in victims if w.p.recovery(r.execution_id)], orphan_deadline(w),
                           "the first forgotten run is failed", interval=0.05)
        pid = kill_child(w.p.stack, "remediator")
    finally:
        w.redis.resume()
    half_done = [w.p.recovery(r.execution_id) for r in first]
    assert not psutil.pid_exists(pid)
    assert all(r.announced_at is None for r in half_done), "the kill should land before the announcement"

    restart_child(w.p.stack, "remediator")
    # Claims of the dead process expire after the claim TTL (30 s by default); then the sweep finishes them.
    w.settle(victims + kept, 30 + orphan_deadline(w) + 10)
    assert all(w.p.failed(r.execution_id) is not None for r in victims)
    assert w.p.status(kept[0].execution_id) == "running"


def test_one_alertmanager_of_the_pair_killed_recoveries_continue(world: World) -> None:
    """With one Alertmanager of the clustered pair SIGKILLed, Prometheus keeps notifying the other,
    which alone delivers: runs forgotten afterwards are still recovered, each exactly once."""
    w = world
    stack = w.p.stack
    dead_url = stack.alertmanager_urls[0]
    kill_child(stack, "alertmanager-1")
    try:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{dead_url}/-/healthy", timeout=2)
        victims = w.start(HA, 600, n=3)
        w.p.restart_agent(HA)
        kept = w.start(HA, 600)
        # The survivor may first wait out its position in the cluster (peer timeout, 15 s) until
        # the gossip notices its peer is gone.
        w.settle(victims + kept, orphan_deadline(w) + 15 + 15)
        assert all(w.p.failed(r.execution_id) is not None for r in victims)
        assert w.p.status(kept[0].execution_id) == "running"
    finally:
        restart_child(stack, "alertmanager-1")



def test_after_every_fault_every_invariant_holds_for_every_run(world: World) -> None:
    """Across the whole module: every run the scheduler started is judged by the invariants, every
    child of the stack (two of them restarted) is running, and the relay subscriber missed nothing."""
    w = world
    started, _ = w.records()
    if not started:
        pytest.skip("judges what the fault tests of this module started: run it with them")
    findings = w.settle(list(started.values()), 20)
    assert findings.recovered and findings.checked == len(started)
    assert set(findings.recovered) == set(findings.lost) - {
        i for i in findings.lost if w.p.status(i) == "success"}  # late reports that beat the restart
    w.p.stack.children.check()
    assert w.announcements.gaps == 0


# -- an announcement interrupted in flight ----------------------------------------------------------
#
# Without Alertmanager: one remediator process, its slots in one Redis and its announcement relay in
# another, so the relay alone can stop answering after the slot was released — the moment a
# publish is in flight. (In the pipeline both live in one Redis; the same window is there, only
# too narrow to hit on purpose.)

@dataclass
class LoneRemediator:
    tmp: Path
    database_url: str
    slots_url: str
    announce_url: str
    agents_template: str
    process: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self) -> None:
        (self.tmp / "token").write_text(TOKEN)
        (self.tmp / "secret").write_text(SECRET)
        port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "exec_watchdog", "remediator", f"--listen=127.0.0.1:{port}",
             f"--database-url={self.database_url}", f"--redis-url={self.slots_url}",
             f"--announce-redis-url={self.announce_url}", f"--agent-url-template={self.agents_template}",
             f"--agent-secret-file={self.tmp / 'secret'}", f"--bearer-token-file={self.tmp / 'token'}",
             "--claim-ttl=1", "--sweep-interval=0.2", "--replica-id=lone"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}"
        eventually(lambda: _ok(f"{self.url}/readyz"), 20, "the remediator is ready")

    def post(self, execution_id: str, agent: str) -> httpx.Response:
        return httpx.post(f"{self.url}/api/v1/alerts", json=notification(alert(execution_id, agent)),
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def _post_ignoring_errors(lone: LoneRemediator, execution_id: str, agent: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        lone.post(execution_id, agent)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def requests_waiting_at(port: int) -> int:
    """Open client connections to the local server on ``port`` whose request it has not read yet
    (a paused Redis reads nothing), from the kernel's TCP table: connections still established
    with bytes in their receive queue. A connection its client closed does not count."""
    waiting = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()  # sl local_address rem_address st tx_queue:rx_queue ...
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        established, unread = fields[3] == "01", int(fields[4].split(":")[1], 16)
        if local_port == port and established and unread:
            waiting += 1
    return waiting


def delivered_so_far(relay_url: str, events: Announcements) -> None:
    """Publish a fence event and wait for the subscriber to get it: Redis delivers to a subscriber
    in the order it ran the publishes, so every event published before has been delivered too."""
    fence = f"fence-{time.monotonic_ns()}"
    client = redis.Redis.from_url(relay_url)
    try:
        client.publish(CHANNEL, json.dumps({"execution_id": fence}))
    finally:
        client.close()
    eventually(lambda: events.count(fence) == 1, 10, "the fence event reached the subscriber", interval=0.05)


@pytest.mark.parametrize("interruption", ["publish times out", "remediator killed"])
def test_announcement_interrupted_in_flight_is_made_exactly_once(tmp_path: Path, interruption: str) -> None:
    """The relay stops answering while a recovery's event is being published: the publish times out
    (or the remediator is SIGKILLed while waiting), the recovery stays owed and is finished later.
    The event already sent is delivered when the relay answers again, so the retry must not send
    it a second time: one recovery, one announcement."""
    loop = LoopThread()
    agents = loop.call(lambda: serve_agents(["a1"], SECRET))
    engine = db.create_engine(f"sqlite:///{tmp_path / 'trinity.db'}")
    db.create_platform_tables(engine, slot_metadata)
    with RedisProcess() as slots_redis, RedisProcess() as relay:
        slots = RedisSlots.from_url(slots_redis.url)
        for execution_id in ("warm-up", "e1"):
            with engine.begin() as conn:
                insert_execution(conn, execution_id, "a1", age_seconds=120)
            slots.acquire("a1", execution_id, utcnow(), "m", 3600)
        events = Announcements(relay.url)
        lone = LoneRemediator(tmp_path, str(engine.url), slots_redis.url, relay.url, agents.url_template)
        try:
            lone.start()
            assert lone.post("warm-up", "a1").status_code == 200  # the relay connection is open now
            eventually(lambda: events.count("warm-up") == 1, 5, "the warm-up recovery is announced")

            relay.pause()
            try:
                if interruption == "publish times out":
                    response = lone.post("e1", "a1")
                    assert response.status_code == 503, response.text  # recovered; announcement owed
                    # The timed-out connection is closed by now, so a request waiting is the sweep's retry.
                    eventually(lambda: requests_waiting_at(relay.port), 20,
                               "the sweep retries meanwhile: its request waits at the paused relay too",
                               interval=0.05)
                else:
                    poster = threading.Thread(target=_post_ignoring_errors, args=(lone, "e1", "a1"))
                    poster.start()
                    eventually(lambda: "e1" not in slots.held("a1"), 10, "the slot is released: publishing now")
                    eventually(lambda: requests_waiting_at(relay.port), 10, "the publish waits at the paused relay",
                               interval=0.05)
                    lone.kill()
                    poster.join(10)
            finally:
                relay.resume()
            if interruption == "remediator killed":
                lone.start()  # the claim of the dead process expires after 1 s; the sweep finishes it

            def announced() -> bool:
                with engine.connect() as conn:
                    row = conn.execute(sa.select(recoveries.c.announced_at)
                                       .where(recoveries.c.execution_id == "e1")).one()
                return row.announced_at is not None

            eventually(announced, 15, "the owed announcement is made")
            delivered_so_far(relay.url, events)  # any second announcement would have arrived by now
            assert slots.held("a1") == set()
            assert events.count("e1") == 1, f"e1 announced {events.count('e1')} times on the relay"
        finally:
            lone.kill()
            events.close()
            engine.dispose()
            loop.call(agents.stop)
            loop.close()
