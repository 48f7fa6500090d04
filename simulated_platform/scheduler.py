"""The simulated platform's scheduler: it does what Trinity's backend does around an execution —
insert the row, take a capacity slot, dispatch to the agent, and on completion write the final
status and release the slot — and it can be told to get things wrong the ways platforms do.

Execution faults (per execution):
    none              completes and is reported normally
    lose_report       dispatched asynchronously (so the agent retains nothing); the process
                      finishes but the completion report is lost: an orphan to fail
    retained_success  dispatched synchronously and succeeds, the agent retains its result, the
                      backend worker that waited for it dies (the report is lost, its in-flight
                      marker lapses): an orphan whose success must be claimed, never failed
    hang              the process runs far past its timeout (overdue); ending it reports nothing
    late_report       the report arrives ``late_report_seconds`` after the process ended, while the
                      agent still lists it as recently completed: must never be failed
    inflight          the backend holds the dispatch ``hold_seconds`` before the agent gets it:
                      the row says running, the agent knows nothing, only the in-flight marker
                      says it is alive; then it runs and is reported normally: never an orphan
    leak_slot         completes and is reported normally, but the writer never releases its
                      capacity slot: a leaked slot (row finished, slot held) to release
    expire_slot       its slot's score is already past the slot TTL when it is taken (a dispatch
                      parked longer than its lease): an expired slot whose run the agent still
                      lists, so only the slot is removed; the run then reports normally
Agent faults (whole agent): ``restart_agent`` (registry wiped, every report lost: orphans) and
    no_session        a silent launch failure: the row and the slot are taken but the backend
                      never dispatches it and never writes a session (``claude_session_id``
                      stays NULL); every other run gets ``dispatched`` (``dispatched_async`` for
                      an asynchronous dispatch), as Trinity's backend writes when it dispatches
Agent faults (whole agent): ``restart_agent`` (registry wiped, every report lost: orphans),
``stop_agent``/``resume_agent`` (unreachable: never orphans), ``remove_agent`` (gone for good:
its processes die unreported and it never answers again; its runs end through Trinity's stale
and no-session sweeps), and ``partition``/``heal`` (the whole fleet stops answering the watchdog
while the platform keeps running its work: nothing may be failed).

Rows Trinity's cleanup service ends (issue 22): ``add_skipped`` (a skipped row never given a
``completed_at``), ``add_stale_queued`` (a queued row that has waited too long),
``add_stale_activity`` (an activity nobody closed); ``subscribe`` adds an agent event subscription.

Activities as Trinity writes them: every run opens its dispatch activity (``schedule_start``,
``started``) when it is admitted, and the completion report closes it (``completed`` or ``failed``
with the error, ``duration_ms`` measured) with Trinity's compare-and-set; a lost report leaves it
open, for the watchdog's recovery to close.

Like Trinity's backend: ids are ``secrets.token_urlsafe(16)``; every dispatch is registered in
the in-flight registry (:mod:`exec_watchdog.simulated_platform.dispatches`) for its whole call when an
``inflight`` store is given, and a dispatch held 5 s or more is re-anchored when it is granted
(``started_at`` = now; admission stays in ``queued_at``).
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import anyio.to_thread
import redis
import sqlalchemy as sa
import structlog

from exec_watchdog.platform_access import activities
from exec_watchdog.platform_access.inflight import REFRESH_SECONDS, InflightStore
from exec_watchdog.platform_access.schema import (
    agent_activities,
    agent_event_subscriptions,
    agent_ownership,
    agent_schedules,
    schedule_executions,
)
from exec_watchdog.platform_access.slot_expiry import SLOT_TTL_MARGIN_SECONDS
from exec_watchdog.platform_access.slots import SlotStore
from exec_watchdog.platform_access.timestamps import format_utc, utcnow
from exec_watchdog.simulated_platform.agent_server import AgentServer
from exec_watchdog.simulated_platform.dispatches import GRACE_SECONDS, Dispatches
from exec_watchdog.simulated_platform.process_registry import RunResult

Fault = Literal["none", "lose_report", "retained_success", "hang", "late_report", "inflight", "leak_slot",
                "expire_slot", "no_session"]
FAULTS: tuple[Fault, ...] = ("none", "lose_report", "retained_success", "hang", "late_report", "inflight",
                             "leak_slot", "expire_slot", "no_session")
EXPIRED_BY_SECONDS = 1.0  # an expire_slot run's slot is this far past its TTL when taken
DISPATCHED, DISPATCHED_ASYNC = "dispatched", "dispatched_async"  # what Trinity's backend writes on dispatch
HANG_SECONDS = 24 * 3600  # "forever", for a simulation
RESTAMP_AFTER_SECONDS = 5.0  # Trinity's DISPATCH_RESTAMP_THRESHOLD_SECONDS
log = structlog.get_logger("exec_watchdog.simulate")


@dataclass(frozen=True, slots=True)
class Started:
    execution_id: str
    agent: str
    fault: Fault
    started_at: datetime
    timeout_seconds: int
    schedule_id: str = ""  # "" means the agent's simulated schedule, sim-{agent}


class Scheduler:
    def __init__(self, engine: sa.Engine, slots: SlotStore, agents: AgentServer, *,
                 timeout_seconds: int = 3600, late_report_seconds: float = 3.0,
                 on_event: Callable[[str, Started, str], None] | None = None,
                 inflight: InflightStore | None = None, hold_seconds: float = 30.0,
                 marker_tick: float = REFRESH_SECONDS, marker_grace: float = GRACE_SECONDS,
                 agent_timeout_seconds: int = 3600) -> None:
        if hold_seconds < 0:
            raise ValueError(f"hold_seconds must be >= 0, got {hold_seconds!r}")
        self.engine = engine
        self.slots = slots
        self.agents = agents
        self.timeout_seconds = timeout_seconds
        self.agent_timeout_seconds = agent_timeout_seconds  # agent_ownership's: Trinity's stale sweep counts from it
        self.late_report_seconds = late_report_seconds
        self.hold_seconds = hold_seconds
        self.on_event = on_event or (lambda kind, started, detail: None)
        self.started: dict[str, Started] = {}
        self.held: set[str] = set()  # in the backend, not on the agent yet
        self.retained_lost: set[str] = set()  # succeeded, retained by the agent, report lost
        self.counts: Counter[str] = Counter()
        self.owed_releases: set[tuple[str, str]] = set()
        # Rows and activities added for the cleanup paths, by kind (skipped, queued, activities).
        self.injected: dict[str, list[str]] = {"skipped": [], "queued": [], "activities": []}
        self.partitioned: set[str] = set()  # agents the watchdog cannot reach during a partition
        self.dispatches = Dispatches(inflight, tick=marker_tick, grace=marker_grace) if inflight else None
        self._tasks: set[asyncio.Task[None]] = set()
        self._activities = "agent_activities" in sa.inspect(engine).get_table_names()
        for name in agents.agents:
            agents.registry(name).on_complete(self._completion_hook(name))

    def prepare(self) -> None:
        """Register the agents and one schedule per agent carrying the simulation's timeout."""
        with self.engine.begin() as conn:
            known = set(conn.execute(sa.select(agent_ownership.c.agent_name)).scalars())
            for name in self.agents.agents:
                if name not in known:
                    conn.execute(sa.insert(agent_ownership).values(
                        agent_name=name, execution_timeout_seconds=self.agent_timeout_seconds,
                        max_parallel_tasks=10_000))
                    conn.execute(sa.insert(agent_schedules).values(
                        id=f"sim-{name}", agent_name=name, name=f"simulated work on {name}",
                        timeout_seconds=self.timeout_seconds))

    async def start(self, agent: str, seconds: float, fault: Fault = "none", *, schedule_id: str = "",
                    timeout_seconds: int | None = None) -> Started:
        """Admit a run (row and slot) and dispatch it; an ``inflight`` run is dispatched later,
        in the background, and :meth:`drain` waits for it. ``schedule_id``/``timeout_seconds``
        give it a schedule of its own (see schedules.py)."""
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)}, got {fault!r}")
        execution_id = secrets.token_urlsafe(16)
        started = Started(execution_id, agent, fault, utcnow(), timeout_seconds or self.timeout_seconds, schedule_id)
        await anyio.to_thread.run_sync(self._insert, started)
        self.started[execution_id] = started  # only runs that really have a row
        if self.dispatches:
            self.dispatches.register(execution_id, agent)
        self.counts[f"started_{fault}"] += 1
        if fault == "no_session":  # the launch failed silently: nothing is dispatched, nothing reported
            self._end_dispatch(execution_id)
            self.on_event("started", started, "never dispatched, no session")
            return started
        if fault == "inflight":
            self.held.add(execution_id)
            self.on_event("started", started, f"held {self.hold_seconds:g}s in the backend, then {seconds:g}s")
            self._background(self._dispatch_later(started, seconds))
            return started
        await self._dispatch(started, seconds)
        self.on_event("started", started, f"{seconds:g}s" if fault != "hang" else "hangs")
        if fault == "expire_slot":
            self.on_event("slot_expired", started, "slot taken already past its TTL")
        return started

    async def _dispatch(self, started: Started, seconds: float) -> None:
        execution_id, fault = started.execution_id, started.fault
        if self.dispatches:
            self.dispatches.calling(execution_id)
        result = RunResult(synchronous=fault != "lose_report")
        try:
            await self.agents.registry(started.agent).start(
                execution_id, HANG_SECONDS if fault == "hang" else seconds, {"fault": fault}, result=result)
        except Exception:
            # The row says running but no agent runs it: an orphan from the start.
            self._end_dispatch(execution_id)
            self.counts["starts_failed"] += 1
            self.on_event("start_failed", started, "the agent did not start it")
            raise
        if not result.synchronous:
            self._end_dispatch(execution_id)  # the agent answered 202: the backend holds nothing now

    async def _dispatch_later(self, started: Started, seconds: float) -> None:
        await asyncio.sleep(self.hold_seconds)
        if self.hold_seconds >= RESTAMP_AFTER_SECONDS:
            try:
                restamped = await anyio.to_thread.run_sync(self._restamp, started.execution_id)
            except sa.exc.OperationalError:  # the database is down: dispatch on the old clock
                restamped = None
            if restamped is not None:
                started = Started(started.execution_id, started.agent, started.fault, restamped,
                                  started.timeout_seconds)
                self.started[started.execution_id] = started
        self.held.discard(started.execution_id)
        try:
            await self._dispatch(started, seconds)
        except Exception:
            return  # counted as a failed start
        self.on_event("dispatched", started, f"{seconds:g}s after {self.hold_seconds:g}s in the backend")

    def _restamp(self, execution_id: str) -> datetime | None:
        """The dispatch waited: its clock starts now (Trinity's restamp_execution_dispatch)."""
        now = utcnow()
        with self.engine.begin() as conn:
            updated = conn.execute(sa.update(schedule_executions).where(
                schedule_executions.c.id == execution_id, schedule_executions.c.status == "running",
            ).values(started_at=format_utc(now)))
        return now if updated.rowcount == 1 else None

    def _end_dispatch(self, execution_id: str) -> None:
        if self.dispatches:
            self.dispatches.end(execution_id)

    def _background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _insert(self, s: Started) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.insert(schedule_executions).values(
                id=s.execution_id, schedule_id=s.schedule_id or f"sim-{s.agent}", agent_name=s.agent, status="running",
                started_at=format_utc(s.started_at), message=f"simulated {s.fault} run", triggered_by="schedule",
                queued_at=format_utc(s.started_at), claude_session_id=_session_marker(s.fault)))
            if self._activities:  # Trinity's track_activity at dispatch
                self._open_activity(conn, s.agent, s.execution_id, s.started_at)
        acquired = s.started_at
        if s.fault == "expire_slot":
            acquired -= timedelta(seconds=s.timeout_seconds + SLOT_TTL_MARGIN_SECONDS + EXPIRED_BY_SECONDS)
        self.slots.acquire(s.agent, s.execution_id, acquired, f"simulated {s.fault} run", s.timeout_seconds)

    def _completion_hook(self, agent: str) -> Callable[[str, int], None]:
        def completed(execution_id: str, returncode: int) -> None:
            started = self.started.get(execution_id)
            if started is None:
                return
            if started.fault == "retained_success":
                if self.dispatches:
                    self.dispatches.abandon(execution_id)  # the worker died: its marker lapses
                self.counts["reports_lost"] += 1
                self.retained_lost.add(execution_id)
                self.on_event("report_lost", started, f"returncode {returncode}, retained by the agent, report lost")
                return
            self._end_dispatch(execution_id)  # the call returned
            if started.fault == "lose_report":
                self.counts["reports_lost"] += 1
                self.on_event("report_lost", started, "process ended, report lost")
                return
            if started.fault == "hang":
                # Overdue means nobody waits for the run any more (that is why it outlived its
                # timeout): when something finally ends it, no completion report follows.
                self.counts["hung_runs_ended"] += 1
                self.on_event("hang_ended", started, f"returncode {returncode}, unreported")
                return
            delay = self.late_report_seconds if started.fault == "late_report" else 0.0
            self._background(self._report(started, returncode, delay))
        return completed

    async def _report(self, started: Started, returncode: int, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        try:
            won = await anyio.to_thread.run_sync(self._write_final, started, returncode)
        except sa.exc.OperationalError:  # the database refused the report: now a real orphan
            self.counts["reports_refused"] += 1
            if returncode == 0:
                self.retained_lost.add(started.execution_id)  # the agent kept the success all the same
            self.on_event("report_lost", started, "database refused the completion report")
            return
        self.counts["reported" if won else "report_too_late"] += 1
        self.on_event("completed" if won else "report_too_late", started, f"returncode {returncode}")
        if started.fault == "leak_slot":
            self.counts["slots_leaked"] += 1
            self.on_event("slot_leaked", started, "row finished, its slot never released")

    def _write_final(self, s: Started, returncode: int) -> bool:
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(schedule_executions)
                .where(schedule_executions.c.id == s.execution_id, schedule_executions.c.status == "running")
                .values(status="success" if returncode == 0 else "failed", completed_at=format_utc(now),
                        duration_ms=int((now - s.started_at).total_seconds() * 1000),
                        error=None if returncode == 0 else f"exit code {returncode}"))
            if result.rowcount == 1 and self._activities:  # the CAS winner closes the paired activity
                activities.close_one(conn, s.execution_id, "success" if returncode == 0 else "failed",
                                     None if returncode == 0 else f"exit code {returncode}", now)
        if s.fault != "leak_slot":  # a leak: the writer finishes the row and forgets the slot
            self._release(s.agent, s.execution_id)
        return result.rowcount == 1

    def _release(self, agent: str, execution_id: str) -> None:
        try:
            self.slots.release(agent, execution_id)
        except (redis.RedisError, sa.exc.OperationalError, OSError):
            self.owed_releases.add((agent, execution_id))  # as a real platform: retried when the store answers

    def release_owed(self) -> int:
        """Retry slot releases that failed while the slot store was down; returns how many remain."""
        for agent, execution_id in list(self.owed_releases):
            self.owed_releases.discard((agent, execution_id))
            self._release(agent, execution_id)
        return len(self.owed_releases)

    @staticmethod
    def _open_activity(conn: sa.Connection, agent: str, execution_id: str | None, at: datetime,
                       activity_type: str = "schedule_start") -> str:
        activity_id = str(uuid.uuid4())
        stamp = format_utc(at)
        conn.execute(sa.insert(agent_activities).values(
            id=activity_id, agent_name=agent, activity_type=activity_type, activity_state="started",
            started_at=stamp, created_at=stamp, triggered_by="schedule", related_execution_id=execution_id))
        return activity_id

    def add_skipped(self, agent: str) -> str:
        """A skipped row never given a completed_at (Trinity's Phase 1c finalizes it)."""
        execution_id, now = secrets.token_urlsafe(16), utcnow()
        with self.engine.begin() as conn:
            conn.execute(sa.insert(schedule_executions).values(
                id=execution_id, schedule_id=f"sim-{agent}", agent_name=agent, status="skipped",
                started_at=format_utc(now), message="simulated skipped run", triggered_by="schedule"))
        self.counts["added_skipped"] += 1
        self.injected["skipped"].append(execution_id)
        return execution_id

    def add_stale_queued(self, agent: str, waited_seconds: float) -> str:
        """A queued row admitted ``waited_seconds`` ago that never left the queue (backlog expiry ends it)."""
        execution_id = secrets.token_urlsafe(16)
        queued = utcnow() - timedelta(seconds=waited_seconds)
        with self.engine.begin() as conn:
            conn.execute(sa.insert(schedule_executions).values(
                id=execution_id, schedule_id=f"sim-{agent}", agent_name=agent, status="queued",
                started_at=format_utc(queued), queued_at=format_utc(queued), message="simulated queued run",
                triggered_by="schedule"))
        self.counts["added_stale_queued"] += 1
        self.injected["queued"].append(execution_id)
        return execution_id

    def add_stale_activity(self, agent: str, age_seconds: float) -> str:
        """An activity opened ``age_seconds`` ago that nobody closed (a chat whose closer died)."""
        with self.engine.begin() as conn:
            activity_id = self._open_activity(conn, agent, None, utcnow() - timedelta(seconds=age_seconds),
                                              "chat_start")
        self.counts["added_stale_activities"] += 1
        self.injected["activities"].append(activity_id)
        return activity_id

    def subscribe(self, subscriber: str, source: str, event_type: str = "agent.task.failed") -> None:
        """An agent event subscription, as Trinity's EVT-001 API writes it."""
        stamp = format_utc(utcnow())
        with self.engine.begin() as conn:
            conn.execute(sa.insert(agent_event_subscriptions).values(
                id=str(uuid.uuid4()), subscriber_agent=subscriber, source_agent=source, event_type=event_type,
                target_message="{{payload.execution_id}} ended: {{payload.summary_or_error}}", enabled=1,
                created_at=stamp, updated_at=stamp, created_by="simulation"))

    def restart_agent(self, agent: str) -> None:
        registry = self.agents.registry(agent)
        forgotten = len(registry.running()) + len(registry.pending_ids())
        for execution_id in [e.execution_id for e in registry.running()] + registry.pending_ids():
            self._end_dispatch(execution_id)  # the connection broke: the backend's call fails
        registry.wipe()
        self.counts["agent_restarts"] += 1
        log.info("agent_restarted", agent=agent, executions_forgotten=forgotten)

    def stop_agent(self, agent: str) -> None:
        self.agents.agents[agent].set_fault("down")
        self.counts["agent_stops"] += 1

    def resume_agent(self, agent: str) -> None:
        self.agents.agents[agent].set_fault("none")

    def remove_agent(self, agent: str) -> None:
        """The agent's container is gone for good: its runs die unreported, it never answers again."""
        registry = self.agents.registry(agent)
        for execution_id in [e.execution_id for e in registry.running()] + registry.pending_ids():
            self._end_dispatch(execution_id)
        self.agents.agents[agent].set_fault("gone")  # kills its processes and forgets them
        self.counts["agents_removed"] += 1
        log.info("agent_removed", agent=agent)

    def removed(self, agent: str) -> bool:
        """Whether the agent was removed for good (``remove_agent``): work is no longer sent to it."""
        return self.agents.agents[agent].fault == "gone"

    def partition(self) -> None:
        """The watchdog loses the whole fleet (every agent answers it 503) while the work goes on."""
        for name, agent in self.agents.agents.items():
            if agent.fault == "none":
                agent.set_fault("down")
                self.partitioned.add(name)
        self.counts["partitions"] += 1

    def heal(self) -> None:
        for name in sorted(self.partitioned):
            self.agents.agents[name].set_fault("none")
        self.partitioned.clear()

    async def drain(self) -> None:
        """Wait for held dispatches and late reports in flight."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop writing in-flight markers (those written lapse on their own)."""
        if self.dispatches:
            await self.dispatches.aclose()


def _session_marker(fault: Fault) -> str | None:
    """What Trinity's backend writes into claude_session_id when it dispatches (nothing when it never does)."""
    if fault == "no_session":
        return None
    return DISPATCHED_ASYNC if fault == "lose_report" else DISPATCHED
