"""Soak: the whole pipeline for a bounded while, with random faults, checking the invariants.

A real PostgreSQL and Redis (our own, on loopback), the simulated platform (agents running real
processes, a scheduler that loses reports and hangs runs as told), the exporter, a real Prometheus,
two clustered Alertmanagers and two remediator replicas, fast profile. For ``--minutes`` it starts
``--executions`` runs evenly (a mix of normal, late-reported, lost-report and hung runs, runs whose
success the agent retained while the report was lost, and dispatches the backend holds for
``--hold`` seconds before the agent gets them) on agents named with every separator Trinity allows
(``agent-001``, ``agent_002``, ``agent.003``), with Trinity's ids and in-flight markers in Redis
(refreshed every second, for dispatches half a second old: Trinity's 15 s and 5 s scaled to the
fast profile), and, one after another with a pause between, injects faults drawn at random from
the issue's list:

    database        PostgreSQL stopped (every connection cut) for --db-outage seconds, then back
    redis           Redis paused (SIGSTOP: nothing answers, nothing is lost) for --redis-outage s
    agent_hang      one agent holds every request for --agent-fault seconds
    agent_garbage   one agent answers a cut-off 200 for --agent-fault seconds
    agent_restart   one busy agent restarts (its runs are killed unreported)
    remediator_kill a busy agent restarts, and remediator-2 is SIGKILLed in the middle of the
                    recoveries that follows, then started again (remediator-1 is never killed, so
                    its memory can be followed over the whole run)
    alertmanager_kill one Alertmanager of the pair SIGKILLed, started again after --am-outage s
    agent_removed   the busiest agent removed for good (once per soak): its runs die unreported
                    and end through Trinity's stale sweep (its agent timeout is --agent-timeout), a
                    launch on it fails silently and ends through the no-session sweep
    fleet_partition every agent stops answering the watchdog for --partition seconds while the work
                    goes on: the fleet guard pages and holds, nothing may be failed for it

and, every --cleanup-every seconds, the rows Trinity's cleanup service ends (pipeline/cleanup_faults.py):
a skipped row never finalized, a queued row past the backlog age, an activity nobody closed (one agent
is subscribed to another's failures, so failed runs also write agent events). At the end each of
them must have ended once with Trinity's text, no finished run may have its activity still open, and
Trinity's UI feed (``trinity:events``) must hold exactly one entry per recovery
(``exec_watchdog.testbed.cleanup_checks``).

Every --check-interval seconds the invariants of tests/test_faults.py (``exec_watchdog.testbed.invariants``)
are checked over every run so far (false kills and duplicates are final the moment they are seen; a
leaked slot counts once it persists for --leak-grace seconds); at the end the runs are left to
settle and everything is checked strictly. Printed every ~30 s, and at the end: executions, faults
injected, recoveries, false kills, duplicates, leaked slots (all three must be 0), runs never recovered, retained
successes written as ``success`` and results lost (must be 0), in-flight dispatches left alone
(all of them must be), time to recovery median/p95/max, and the remediators' RSS at start and end
with its trend. A retained result is claimed no sooner than the profile's claim defer after it was
retained (fast 3 s; production and Trinity 180 s), so those runs take at least that long.

Runs the simulated platform's own failures as a real platform has them: a completion report the
database refused (it was down) is lost, so that run is a real orphan; a slot the platform could not
release (Redis was down) is released by it once Redis answers again.

    .venv/bin/python bench/soak.py                      # 20 minutes, 2,000 executions
    .venv/bin/python bench/soak.py --minutes 5 --executions 500 --seed 7
    .venv/bin/python bench/soak.py --profile production --minutes 12 --executions 600 --timeout 60

Exits 1 when an invariant is broken. Needs Prometheus, Alertmanager, PostgreSQL and Redis
installed (`make system-deps`). Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import anyio.to_thread
import psutil
import redis
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exec_watchdog.common.logs import configure_logging
from exec_watchdog.pipeline.cleanup_faults import inject_cleanup_faults
from exec_watchdog.pipeline.platform import FaultClock, Platform, PlatformOptions, ensure_database
from exec_watchdog.pipeline.stack import Stack, StackOptions
from exec_watchdog.pipeline.timing import Timing
from exec_watchdog.platform_access.inflight import RedisInflight
from exec_watchdog.platform_access.schema import schedule_executions
from exec_watchdog.platform_access.slots import open_slot_store
from exec_watchdog.platform_access.timestamps import parse_utc, utcnow
from exec_watchdog.simulated_platform.agent_server import serve_agents
from exec_watchdog.simulated_platform.process_registry import RegistryConfig
from exec_watchdog.simulated_platform.scheduler import Fault
from exec_watchdog.simulated_platform.workload import agent_names
from exec_watchdog.testbed.announcements import Announcements
from exec_watchdog.testbed.breakable_servers import PostgresProcess, RedisProcess
from exec_watchdog.testbed.cleanup_checks import check_cleanup
from exec_watchdog.testbed.invariants import Findings, check_invariants
from exec_watchdog.testbed.stack_children import kill_child, respawn_child, stack_child, wait_child_ready

FAULTS = ("database", "redis", "agent_hang", "agent_garbage", "agent_restart", "remediator_kill",
          "alertmanager_kill", "agent_removed", "fleet_partition")
KILLED_REPLICA = "remediator-2"  # remediator-1 is never killed: its RSS is followed over the whole run
# The workload: (fault, share, shortest, longest run in seconds); every normal run ends well
# before the schedules' timeout, so only hung runs are ever overdue.
MIX: tuple[tuple[Fault, float, float, float], ...] = (
    ("none", 0.42, 0.5, 15.0),
    ("none", 0.08, 15.0, 25.0),
    ("late_report", 0.10, 0.5, 8.0),
    ("lose_report", 0.12, 0.5, 8.0),
    ("retained_success", 0.10, 0.5, 8.0),
    ("hang", 0.10, 0.0, 0.0),
    ("inflight", 0.08, 0.5, 8.0),
    # A finished run whose slot is never released; released by the leak path (Trinity's start-up sweep).
    ("leak_slot", 0.04, 0.5, 8.0),
    # A dispatch parked past its slot's lease: the slot expires while the agent lists the run, so only
    # the slot is removed (Trinity's Phase 3 "listed: leave the run") and the run must still succeed.
    ("expire_slot", 0.03, 0.5, 8.0),
    ("no_session", 0.02, 0.0, 0.0),  # a silent launch failure: the orphan path (or the no-session sweep) ends it
)
MARKER_TICK, MARKER_GRACE = 1.0, 0.5  # Trinity's 15 s and 5 s, scaled to the fast profile's 3 s minimum age


# -- the simulated platform, failing as a real one does ------------------------------------------

class SoakScheduler(FaultClock):
    """The fault-recording scheduler, retrying the slot releases it owes while Redis is down."""

    async def keep_releasing_owed(self) -> None:
        while True:
            await asyncio.sleep(2)
            await anyio.to_thread.run_sync(self.release_owed)


async def start_platform(options: PlatformOptions, hold_seconds: float) -> Platform:
    assert options.redis_url is not None
    engine = ensure_database(options.database_url)
    slots = open_slot_store(options.redis_url, engine)
    server = await serve_agents(agent_names(options.agents), options.agent_secret,
                                config=RegistryConfig(completed_window=options.completed_window))
    scheduler = SoakScheduler(engine, slots, server, timeout_seconds=options.timeout_seconds,
                              late_report_seconds=options.late_report_seconds,
                              inflight=RedisInflight.from_url(options.redis_url), hold_seconds=hold_seconds,
                              marker_tick=MARKER_TICK, marker_grace=MARKER_GRACE,
                              agent_timeout_seconds=options.agent_timeout_seconds)
    scheduler.prepare()
    return Platform(options, engine, slots, server, scheduler)


@dataclass
class Outcomes:
    """What became of the runs the issue names: retained successes and held dispatches."""

    claimed: list[str] = field(default_factory=list)  # retained success written as success
    results_lost: list[str] = field(default_factory=list)  # retained success written failed
    unclaimed: list[str] = field(default_factory=list)  # retained success still running
    inflight: int = 0
    inflight_touched: list[str] = field(default_factory=list)  # acted on while the backend held it
    inflight_lost_later: int = 0  # truly lost once on its agent (a restart, a refused report)

    @classmethod
    def read(cls, engine: sa.Engine, retained_lost: set[str], inflight: set[str], false_kills: set[str],
             fault_at: Mapping[str, datetime]) -> Outcomes:
        with engine.connect() as conn:
            status = dict(conn.execute(sa.select(schedule_executions.c.id, schedule_executions.c.status)
                                       .where(schedule_executions.c.id.in_(sorted(retained_lost)))).all())
        o = cls(inflight=len(inflight))
        for execution_id in sorted(retained_lost):
            {"success": o.claimed, "running": o.unclaimed}.get(status.get(execution_id, "running"),
                                                                o.results_lost).append(execution_id)
        # A held dispatch has no fault: the watchdog acting on it is a false kill (recovered with no
        # fault, or before it). Once dispatched it can be lost like any run, and is then recovered.
        o.inflight_touched = sorted(inflight & false_kills)
        o.inflight_lost_later = len((inflight - false_kills) & set(fault_at))
        return o


# -- figures --------------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def spread(values: list[float]) -> str:
    if not values:
        return "no data"
    return (f"median {statistics.median(values):.1f} s, p95 {percentile(values, 0.95):.1f} s, "
            f"max {max(values):.1f} s ({len(values)})")


def slope_mb_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, bytes) samples, in MB per minute."""
    if len(samples) < 3:
        return 0.0
    xs, ys = [t for t, _ in samples], [b for _, b in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 60 / 2**20


@dataclass
class Memory:
    """RSS of each remediator process over its lifetime (a restarted replica starts a new one)."""

    samples: dict[tuple[str, int], list[tuple[float, float]]] = field(default_factory=dict)

    def sample(self, stack: Stack, elapsed: float) -> None:
        for name in stack.replica_ids:
            pid = stack_child(stack, name).pid
            if pid is None:
                continue
            with contextlib.suppress(psutil.Error):
                rss = float(psutil.Process(pid).memory_info().rss)
                self.samples.setdefault((name, pid), []).append((elapsed, rss))

    def latest(self, name: str) -> float:
        lives = [s for (n, _), s in self.samples.items() if n == name and s]
        return lives[-1][-1][1] / 2**20 if lives else 0.0

    def report(self) -> list[str]:
        lines = []
        for name in sorted({n for n, _ in self.samples}):
            lives = [(pid, s) for (n, pid), s in self.samples.items() if n == name and s]
            first, last = lives[0][1][0], lives[-1][1][-1]
            pid, longest = max(lives, key=lambda life: life[1][-1][0] - life[1][0][0])
            # The trend over the second half of the longest life: the first part holds imports,
            # pools and caches filling up, and the step an outage's backlog leaves behind.
            span = longest[-1][0] - longest[0][0]
            late = [(t, b) for t, b in longest if t >= longest[0][0] + span / 2]
            quartiles = [longest[min(len(longest) - 1, round(q * (len(longest) - 1)))][1] / 2**20
                         for q in (0, 0.25, 0.5, 0.75, 1)]
            lines.append(f"{name}: {first[1] / 2**20:.1f} MB at start, {last[1] / 2**20:.1f} MB at end "
                         f"({len(lives)} process{'es' if len(lives) > 1 else ''}); longest-lived pid {pid} over "
                         f"{span / 60:.1f} min: " + " / ".join(f"{q:.1f}" for q in quartiles)
                         + f" MB at 0/25/50/75/100 %, second-half trend {slope_mb_per_minute(late):+.2f} MB/min")
        return lines


# -- the run --------------------------------------------------------------------------------------

@dataclass
class Soak:
    args: argparse.Namespace
    platform: Platform
    stack: Stack
    postgres: PostgresProcess
    redis: RedisProcess
    announcements: Announcements
    rng: random.Random  # the workload
    fault_rng: random.Random  # the fault schedule: its own, so it does not depend on timing
    began: float = field(default_factory=time.monotonic)
    faults: Counter[str] = field(default_factory=Counter)
    fault_windows: list[tuple[datetime, datetime]] = field(default_factory=list)
    storage_up: asyncio.Event = field(default_factory=asyncio.Event)  # the platform starts nothing without it
    false_kills: set[str] = field(default_factory=set)
    duplicates: set[str] = field(default_factory=set)
    leak_seen: dict[str, float] = field(default_factory=dict)  # slot -> first seen leaked (monotonic)
    leaked: set[str] = field(default_factory=set)
    checks: int = 0
    checks_skipped: int = 0
    last: Findings = field(default_factory=Findings)
    memory: Memory = field(default_factory=Memory)
    crashes: list[str] = field(default_factory=list)
    down: set[str] = field(default_factory=set)  # children killed on purpose, not yet restarted
    removed: set[str] = field(default_factory=set)  # agents removed for good
    restart_victims: int = 0

    def __post_init__(self) -> None:
        self.scheduler.on_agent = self._agent_event
        self.storage_up.set()

    def _agent_event(self, what: str, agent: str, forgotten: int) -> None:
        self.restart_victims += forgotten

    @property
    def agents(self) -> list[str]:
        return sorted(self.platform.server.agents)

    @property
    def scheduler(self) -> SoakScheduler:
        assert isinstance(self.platform.scheduler, SoakScheduler)
        return self.platform.scheduler

    def elapsed(self) -> float:
        return time.monotonic() - self.began

    def log(self, text: str) -> None:
        minutes, seconds = divmod(int(self.elapsed()), 60)
        print(f"[{minutes:02d}:{seconds:02d}] {text}", flush=True)

    # -- workload -------------------------------------------------------------------------------

    async def generate(self, until: float) -> None:
        interval = until / self.args.executions
        weights = [share for _, share, _, _ in MIX]
        for i in range(self.args.executions):
            await asyncio.sleep(max(0.0, i * interval - self.elapsed()))
            await self.storage_up.wait()
            fault, _, shortest, longest = self.rng.choices(MIX, weights)[0]
            seconds = self.rng.uniform(shortest, longest) if fault != "hang" else 0.0
            agents = [a for a in self.agents if a not in self.removed]  # no work for a removed agent
            with contextlib.suppress(Exception):  # counted as starts_failed
                await self.scheduler.start(self.rng.choice(agents), seconds, fault)

    # -- faults ---------------------------------------------------------------------------------

    async def inject(self, until: float) -> None:
        deck: list[str] = []
        await asyncio.sleep(20)
        while True:
            if not deck:
                deck = list(self.args.faults)
                self.fault_rng.shuffle(deck)
            fault = deck.pop()
            if fault == "agent_removed" and self.removed:
                continue  # once per soak: the fleet must not dwindle
            if self.elapsed() + self._duration(fault) + 10 > until:
                return
            began = utcnow()
            self.faults[fault] += 1
            await getattr(self, f"_{fault}")()
            self.fault_windows.append((began, utcnow()))
            await asyncio.sleep(self.fault_rng.uniform(10, 30))

    def _duration(self, fault: str) -> float:
        a = self.args
        seconds: dict[str, float] = {"database": a.db_outage, "redis": a.redis_outage, "agent_hang": a.agent_fault,
                                     "agent_garbage": a.agent_fault, "alertmanager_kill": a.am_outage,
                                     "remediator_kill": 20.0, "fleet_partition": a.partition}
        return seconds.get(fault, 0.0)

    async def _database(self) -> None:
        self.log(f"fault: database down for {self.args.db_outage:g} s")
        self.storage_up.clear()
        await asyncio.to_thread(self.postgres.stop)
        try:
            await asyncio.sleep(self.args.db_outage)
        finally:
            await asyncio.to_thread(self.postgres.start)
            self.storage_up.set()
        self.log("fault over: database back")

    async def _redis(self) -> None:
        self.log(f"fault: redis paused for {self.args.redis_outage:g} s")
        self.storage_up.clear()
        self.redis.pause()
        try:
            await asyncio.sleep(self.args.redis_outage)
        finally:
            self.redis.resume()
            self.storage_up.set()
        self.log("fault over: redis answers again")

    async def _agent_fault(self, mode: str) -> None:
        agent = self.fault_rng.choice([a for a in self.agents if a not in self.removed])
        self.log(f"fault: {agent} {'hangs' if mode == 'hang' else 'answers garbage'} for {self.args.agent_fault:g} s")
        self.platform.server.agents[agent].set_fault(mode)  # type: ignore[arg-type]
        try:
            await asyncio.sleep(self.args.agent_fault)
        finally:
            self.platform.server.agents[agent].set_fault("none")

    async def _agent_hang(self) -> None:
        await self._agent_fault("hang")

    async def _agent_garbage(self) -> None:
        await self._agent_fault("garbage")

    async def _agent_removed(self) -> None:
        agent, runs = self._busiest_agent()
        self.removed.add(agent)
        self.log(f"fault: {agent} removed for good ({len(runs)} runs die unreported; stale after "
                 f"{self.args.agent_timeout} s + the grace)")
        self.scheduler.remove_agent(agent)
        with contextlib.suppress(Exception):
            await self.scheduler.start(agent, 0, "no_session")  # a launch on it fails silently

    async def _fleet_partition(self) -> None:
        self.log(f"fault: the whole fleet is cut off from the watchdog for {self.args.partition:g} s")
        self.scheduler.partition()
        try:
            await asyncio.sleep(self.args.partition)
        finally:
            self.scheduler.heal()
        self.log("fault over: the fleet answers the watchdog again")

    def _busiest_agent(self) -> tuple[str, list[str]]:
        running: dict[str, list[str]] = {}
        for execution_id, s in self.scheduler.started.items():
            if execution_id not in self.scheduler.finished and execution_id not in self.scheduler.held:
                running.setdefault(s.agent, []).append(execution_id)
        agent = max((a for a in self.agents if a not in self.removed), key=lambda a: len(running.get(a, [])))
        return agent, running.get(agent, [])

    async def _agent_restart(self) -> str:
        agent, runs = self._busiest_agent()
        self.log(f"fault: {agent} restarts ({len(runs)} runs killed unreported)")
        self.scheduler.restart_agent(agent)
        return agent

    async def _remediator_kill(self) -> None:
        agent, victims = self._busiest_agent()
        await self._agent_restart()
        # Kill as soon as the first of them is failed: the rest of the burst is still in flight.
        for _ in range(400):  # 20 s at most
            if await asyncio.to_thread(self._any_failed, victims):
                break
            await asyncio.sleep(0.05)
        self.down.add(KILLED_REPLICA)
        pid = kill_child(self.stack, KILLED_REPLICA)
        self.log(f"fault: {KILLED_REPLICA} (pid {pid}) SIGKILLed in the middle of {agent}'s recoveries")
        await asyncio.sleep(3)
        child = respawn_child(self.stack, KILLED_REPLICA)  # on the main thread: pdeathsig applies
        self.down.discard(KILLED_REPLICA)
        await asyncio.to_thread(wait_child_ready, child)
        self.log(f"fault over: {KILLED_REPLICA} restarted (pid {child.pid})")

    def _any_failed(self, ids: list[str]) -> bool:
        if not ids:
            return True
        with contextlib.suppress(sa.exc.SQLAlchemyError), self.platform.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(schedule_executions).where(
                schedule_executions.c.id.in_(ids), schedule_executions.c.status == "failed")).scalar_one() > 0
        return False

    async def _alertmanager_kill(self) -> None:
        names = [c.name for c in self.stack.children.children if c.name.startswith("alertmanager")]
        name = self.fault_rng.choice(names)
        self.down.add(name)
        pid = kill_child(self.stack, name)
        self.log(f"fault: {name} (pid {pid}) SIGKILLed for {self.args.am_outage:g} s")
        await asyncio.sleep(self.args.am_outage)
        child = respawn_child(self.stack, name)
        self.down.discard(name)
        await asyncio.to_thread(wait_child_ready, child, 90.0)
        self.log(f"fault over: {name} back in the cluster")

    # -- invariants -----------------------------------------------------------------------------

    async def check(self) -> Findings | None:
        started, fault_at = dict(self.scheduler.started), dict(self.scheduler.fault_at)
        try:
            findings = await asyncio.to_thread(check_invariants, self.platform.engine, self.platform.slots,
                                               started, fault_at, self.announcements.snapshot())
        except (sa.exc.SQLAlchemyError, redis.RedisError, OSError):
            self.checks_skipped += 1  # the database or Redis is down: check again later
            return None
        self.checks += 1
        self.last = findings
        self.false_kills |= set(findings.false_kills)
        self.duplicates |= set(findings.duplicates)
        now = time.monotonic()
        current = set(findings.leaked_slots)
        self.leak_seen = {slot: self.leak_seen.get(slot, now) for slot in current}
        self.leaked |= {slot for slot, since in self.leak_seen.items() if now - since >= self.args.leak_grace}
        return findings

    async def monitor(self) -> None:
        next_progress = 30.0
        while True:
            await asyncio.sleep(self.args.check_interval)
            await self.check()
            for child in self.stack.children.children:
                if child.returncode is not None and child.name not in self.down | set(self.crashes):
                    self.crashes.append(child.name)
                    self.log(f"CRASH: {child.name} exited with {child.returncode} (log: {child.log_path})")
            if self.elapsed() >= next_progress:
                next_progress += 30.0
                self.memory.sample(self.stack, self.elapsed())
                self.progress()

    def progress(self) -> None:
        f = self.last
        s = self.scheduler
        running = len(s.started) - len(s.finished)
        self.log(f"started {len(s.started)} (running {running}) | faults {sum(self.faults.values())} | "
                 f"recovered {len(f.recovered)} of {len(f.lost)} lost, pending {len(f.pending)} | "
                 f"false kills {len(self.false_kills)}, duplicates {len(self.duplicates)}, "
                 f"leaked slots {len(self.leaked)} | RSS "
                 + ", ".join(f"{n} {self.memory.latest(n):.1f} MB" for n in self.stack.replica_ids))

    async def settle(self, timeout: float) -> Findings:
        deadline = time.monotonic() + timeout
        while True:
            findings = await self.check()
            if findings is not None and (not findings.unsettled() or time.monotonic() > deadline):
                return findings
            if findings is None and time.monotonic() > deadline:
                return self.last
            await asyncio.sleep(2)

    # -- report ---------------------------------------------------------------------------------

    def disturbed(self, fault: datetime, recovered: datetime) -> bool:
        """Did an injected fault overlap the time from this execution's fault to its recovery?"""
        return any(begin <= recovered and fault <= end for begin, end in self.fault_windows)

    def report(self, final: Findings) -> int:
        s = self.scheduler
        kinds = Counter(v.fault for v in s.started.values())
        with self.platform.engine.connect() as conn:
            actions: Counter[str] = Counter(dict(conn.execute(sa.text(
                "SELECT action, count(*) FROM watchdog_recoveries GROUP BY action")).all()))
            recovered_at = {r.execution_id: r.recovered_at for r in conn.execute(sa.text(
                "SELECT execution_id, recovered_at FROM watchdog_recoveries"))}
        leaked = self.leaked | set(final.leaked_slots)
        false_kills = self.false_kills | set(final.false_kills)
        duplicates = self.duplicates | set(final.duplicates)
        missed = final.pending + final.unfinished
        ttr = final.time_to_recovery
        quiet = []
        for execution_id, seconds in ttr.items():
            recovered = parse_utc(recovered_at[execution_id])
            if not self.disturbed(recovered - timedelta(seconds=seconds), recovered):
                quiet.append(seconds)
        a = self.args
        print()
        print(f"soak: {self.elapsed() / 60:.1f} min, seed {a.seed}, {a.agents} agents, {a.profile} profile; "
              f"PostgreSQL, Redis, 2 clustered Alertmanagers, 2 remediator replicas")
        print(f"  executions        {len(s.started)} ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}); "
              f"agent restarts killed {self.restart_victims} runs unreported; "
              f"reports refused by the database {s.counts['reports_refused']}, "
              f"starts failed {s.counts['starts_failed']}")
        by_fault = ", ".join(f"{k} {self.faults[k]}" for k in FAULTS if self.faults[k])
        print(f"  faults injected   {sum(self.faults.values())}" + (f": {by_fault}" if by_fault else ""))
        by_action = ", ".join(f"{k} {n}" for k, n in sorted(actions.items()))
        print(f"  recoveries        {len(final.recovered)} ({by_action})"
              f" of {len(final.lost)} truly orphaned or overdue; never recovered {len(missed)}"
              + (f" {missed[:10]}" if missed else ""))
        print(f"  false kills       {len(false_kills)}" + (f" {sorted(false_kills)[:10]}" if false_kills else ""))
        print(f"  duplicates        {len(duplicates)}" + (f" {sorted(duplicates)[:10]}" if duplicates else ""))
        print(f"  leaked slots      {len(leaked)}" + (f" {sorted(leaked)[:10]}" if leaked else ""))
        # A removed agent's retained results went with its container: nothing is left to claim.
        gone_with_agent = {i for i in s.retained_lost if s.started[i].agent in self.removed}
        o = Outcomes.read(self.platform.engine, set(s.retained_lost) - gone_with_agent,
                          {i for i, v in s.started.items() if v.fault == "inflight"}, false_kills, s.fault_at)
        print(f"  retained results  {len(o.claimed)} of {len(s.retained_lost) - len(gone_with_agent)} successes the "
              f"agent retained while the report was lost (retained_success runs, and reports the database refused; "
              f"{len(gone_with_agent)} more went with a removed agent) were "
              f"written as success; results lost {len(o.results_lost)}"
              + (f" {o.results_lost[:10]}" if o.results_lost else "")
              + (f"; still running {len(o.unclaimed)}" if o.unclaimed else ""))
        print(f"  in-flight         {o.inflight - len(o.inflight_touched)} of {o.inflight} dispatches held in the "
              f"backend left alone while held ({o.inflight_lost_later} of them truly lost later, on their agent, "
              f"and recovered)" + (f"; acted on while held {o.inflight_touched[:10]}" if o.inflight_touched else ""))
        print(f"  time to recovery  {spread(list(ttr.values()))}  (from the fault: lost report, agent restart, "
              "timeout crossed)")
        print(f"                    undisturbed by an injected fault: {spread(quiet)}")
        print(f"  invariant checks  {self.checks} (+{self.checks_skipped} skipped while storage was down)")
        for line in self.memory.report():
            print(f"  remediator RSS    {line}")
        if self.crashes:
            print(f"  crashed children  {self.crashes}")
        broken = bool(false_kills or duplicates or leaked or missed or self.crashes or final.unannounced
                      or o.results_lost or o.unclaimed or o.inflight_touched)
        print(f"\n{'INVARIANTS BROKEN' if broken else 'all invariants held'}")
        return 1 if broken else 0


async def soak(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="exec-watchdog-soak-"))
    run_seconds = args.minutes * 60
    with PostgresProcess() as postgres, RedisProcess() as rds:
        options = PlatformOptions(database_url=postgres.url, agents=args.agents, redis_url=rds.url,
                                  timeout_seconds=args.timeout, completed_window=5.0, late_report_seconds=2.0,
                                  agent_timeout_seconds=args.agent_timeout)
        platform = await start_platform(options, args.hold)
        stack = Stack(StackOptions(postgres.url, platform.url_template, options.agent_secret, redis_url=rds.url,
                                   profile=args.profile, alertmanagers=2, remediators=2,
                                   remediator_flags=("--breaker-max-actions", str(args.breaker_max_actions))),
                      workdir / "stack")
        stack.keep_workdir = True
        tasks: list[asyncio.Task[None]] = []
        code = 1
        try:
            stack.start()
            await asyncio.to_thread(stack.wait_ready, 120.0)
            announcements = Announcements(rds.url)
            s = Soak(args, platform, stack, postgres, rds, announcements, random.Random(args.seed),
                     random.Random(args.seed + 1_000_003))
            s.memory.sample(stack, 0.0)
            timing = Timing.of(args.profile)
            s.log(f"pipeline ready (work dir {workdir}); {args.executions} executions over {args.minutes:g} min on "
                  f"{args.agents} agents, faults from {', '.join(args.faults)}; {timing.describe()}")
            drain = args.timeout + 30.0  # the last runs must have time to end, be lost and be recovered
            tasks = [asyncio.create_task(s.generate(run_seconds - drain)),
                     asyncio.create_task(s.inject(run_seconds - drain)),
                     asyncio.create_task(inject_cleanup_faults(
                         s.scheduler, s.agents, args.profile, args.cleanup_every, run_seconds - drain,
                         seed=args.seed, first_after=10.0)),
                     asyncio.create_task(s.monitor()),
                     asyncio.create_task(s.scheduler.keep_releasing_owed())]
            await asyncio.sleep(max(0.0, run_seconds - s.elapsed()))
            s.log("run over: no more executions or faults; letting everything settle")
            for task in tasks[:3]:
                task.cancel()
            final = await s.settle(args.settle)
            s.memory.sample(stack, s.elapsed())
            s.progress()
            code = s.report(final)
            code |= report_cleanup(s.scheduler, platform.engine, rds.url)
            announcements.close()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            stack.stop()
            await platform.scheduler.aclose()
            await platform.stop()
    if code == 0:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"configurations, data and logs kept in {workdir}")
    return code


def report_cleanup(scheduler: SoakScheduler, engine: sa.Engine, redis_url: str) -> int:
    """The cleanup paths' end-of-run checks; 1 when one is broken."""
    injected = scheduler.injected
    f = check_cleanup(engine, redis_url, skipped=injected["skipped"], queued=injected["queued"],
                      stale_activities=injected["activities"])
    print(f"  cleanup paths     skipped {len(injected['skipped'])}, queued {len(injected['queued'])}, stale "
          f"activities {len(injected['activities'])} injected; not ended right {len(f.rows_not_ended)}"
          f"{f.rows_not_ended[:5]}, activities left open {len(f.activities_not_failed)}; finished runs whose "
          f"activity is still open {len(f.open_pairs)} {f.open_pairs[:5]}")
    print(f"  trinity:events    recoveries without their entry {len(f.stream_missing)} {f.stream_missing[:5]}, "
          f"with more than one {len(f.stream_duplicates)} {f.stream_duplicates[:5]}")
    return 1 if f.broken else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="length of the run (default 20)")
    parser.add_argument("--executions", type=int, default=2000, help="executions started over the run")
    parser.add_argument("--seed", type=int, default=1, help="seed of the workload and the fault schedule")
    parser.add_argument("--profile", choices=("fast", "production"), default="fast",
                        help="the alerts/ profile's timings (scrape, evaluation, for, group_wait, orphan minimum age)")
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--timeout", type=int, default=30,
                        help="the schedules' timeout: hung runs are overdue after it")
    parser.add_argument("--db-outage", type=float, default=60.0, help="seconds the database is down per fault")
    parser.add_argument("--redis-outage", type=float, default=30.0, help="seconds Redis is paused per fault")
    parser.add_argument("--agent-fault", type=float, default=20.0, help="seconds an agent hangs or answers garbage")
    parser.add_argument("--am-outage", type=float, default=30.0, help="seconds an Alertmanager stays dead")
    parser.add_argument("--check-interval", type=float, default=10.0, help="seconds between invariant checks")
    parser.add_argument("--cleanup-every", type=float, default=30.0,
                        help="seconds between injections of a skipped row, an expired queued row and a stale "
                             "activity (0: never)")
    parser.add_argument("--leak-grace", type=float, default=150.0,
                        help="seconds a slot may stay held for a finished run before it counts as leaked "
                             "(releases are owed while Redis is down)")
    parser.add_argument("--breaker-max-actions", type=int, default=5000,
                        help="the remediators' breaker budget per 300 s; the default 100 is below the planned "
                             "recovery rate of a full soak (about 35%% of the runs are lost), and the breaker is "
                             "there to stop a runaway, which this is not")
    parser.add_argument("--settle", type=float, default=180.0, help="seconds allowed to settle at the end")
    parser.add_argument("--faults", type=lambda text: [f for f in text.split(",") if f], default=list(FAULTS),
                        help=f"comma-separated faults to draw from (default all: {','.join(FAULTS)})")
    parser.add_argument("--agent-timeout", type=int, default=60,
                        help="the agents' own timeout (agent_ownership), which Trinity's stale sweep counts from: "
                             "above every normal run and the schedules' --timeout, so only lost runs go stale")
    parser.add_argument("--partition", type=float, default=20.0,
                        help="seconds the whole fleet stays cut off from the watchdog per fleet_partition fault")
    parser.add_argument("--hold", type=float, default=20.0,
                        help="seconds the backend holds an 'inflight' dispatch before the agent gets it (well "
                             "past the fast profile's minimum orphan age, so only the marker protects it)")
    args = parser.parse_args()
    if args.minutes < 2:
        parser.error("--minutes must be at least 2: the last runs need time to be lost and recovered")
    if args.executions < 1:
        parser.error("--executions must be at least 1")
    if not args.faults or set(args.faults) - set(FAULTS):
        parser.error(f"--faults takes some of {', '.join(FAULTS)}")
    if not 0 <= args.hold <= args.timeout:
        parser.error("--hold must be from 0 to --timeout seconds")
    if not 1 <= args.agents <= 1000:
        parser.error("--agents must be from 1 to 1000")
    if args.timeout < 30:
        parser.error("--timeout must be at least 30 s: normal runs (up to 25 s) must never be overdue")
    configure_logging("warning", "console")  # the figures are the output; children log to files
    try:
        return asyncio.run(soak(args))
    except KeyboardInterrupt:  # everything was stopped on the way out
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
