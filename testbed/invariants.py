"""The invariants the fault tests and the soak check over every run, judged from the database, the
slots and the relay against the scheduler's record of which runs were truly orphaned or overdue:

- every execution truly orphaned or overdue is recovered;
- none that completed normally, or still runs as it should, is failed by the watchdog;
- each recovery has exactly one outbox row with its slot released and its announcement made, and
  exactly one announcement on the relay;
- no slot is held for an execution no longer running, and none is missing for one that is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from exec_watchdog.common.contract import RELEASE_LEAKED_SLOT
from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.schema import schedule_executions
from exec_watchdog.platform_access.slots import SlotStore
from exec_watchdog.platform_access.timestamps import parse_utc, utcnow
from exec_watchdog.remediator.audit import decisions, recoveries
from exec_watchdog.simulated_platform.scheduler import Started

CLOCK_TOLERANCE = timedelta(seconds=0.5)  # platform and remediator share one clock; allow rounding


@dataclass
class Findings:
    """What the database, the slots and the relay say about a set of executions, judged against
    the scheduler's record of which of them were truly orphaned or overdue (and since when)."""

    checked: int = 0
    lost: list[str] = field(default_factory=list)  # truly orphaned or overdue by now
    recovered: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # lost, still running: not recovered yet
    unfinished: list[str] = field(default_factory=list)  # recovered; slot release or announcement owed
    false_kills: list[str] = field(default_factory=list)  # failed by the watchdog though not lost (yet)
    duplicates: list[str] = field(default_factory=list)  # more than one announcement or recovery
    unannounced: list[str] = field(default_factory=list)  # marked announced, no event on the relay
    leaked_slots: list[str] = field(default_factory=list)  # slot held, execution no longer running
    stolen_slots: list[str] = field(default_factory=list)  # execution running untouched, slot gone
    time_to_recovery: dict[str, float] = field(default_factory=dict)  # fault -> row failed, seconds

    def violations(self) -> dict[str, list[str]]:
        """Broken invariants that no amount of waiting repairs (transient states excluded)."""
        found = {"false_kills": self.false_kills, "duplicates": self.duplicates}
        return {k: v for k, v in found.items() if v}

    def unsettled(self) -> dict[str, list[str]]:
        """What should have happened by the end: every list here must be empty once settled."""
        found = {"pending": self.pending, "unfinished": self.unfinished, "unannounced": self.unannounced,
                 "leaked_slots": self.leaked_slots, "stolen_slots": self.stolen_slots, **self.violations()}
        return {k: v for k, v in found.items() if v}

    def describe(self) -> str:
        problems = self.unsettled()
        if not problems:
            return f"{self.checked} executions, {len(self.recovered)} recovered, all invariants hold"
        return "; ".join(f"{k}: {v[:8]}{' ...' if len(v) > 8 else ''} ({len(v)})" for k, v in problems.items())


def _chunks(items: list[str], size: int = 500) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def fault_moment(started: Started, recorded: datetime | None, execution: db.Execution | None) -> datetime | None:
    """When this execution became truly orphaned or overdue, or ``None`` if it never did.

    A hung run is overdue once its runtime crosses the effective timeout the database holds now
    (tests lower it per agent); an earlier recorded fault (its agent restarted) comes first.
    """
    if started.fault == "hang" and execution is not None:
        crossed = execution.started_at + timedelta(seconds=execution.timeout_seconds)
        return min(crossed, recorded) if recorded is not None else crossed
    return recorded


def check_invariants(engine: sa.Engine, slots: SlotStore, started: Mapping[str, Started],
                     fault_at: Mapping[str, datetime], announced: Mapping[str, int], *,
                     ids: Iterable[str] | None = None, now: datetime | None = None) -> Findings:
    """Judge ``ids`` (default: everything the scheduler started). Read-only, any time.

    ``started`` and ``fault_at`` are the scheduler's records (copies: they change on its loop);
    ``announced`` counts relay events per execution. Transient states (a slot released a moment
    after the row was written, a recovery being finished) show up in ``unsettled`` only; the
    caller decides how long to wait for them to clear.
    """
    now = now or utcnow()
    wanted = sorted(set(ids) if ids is not None else set(started))
    rows: dict[str, Any] = {}
    executions: dict[str, db.Execution | db.BadRow] = {}
    outbox: dict[str, Any] = {}
    wins: Counter[str] = Counter()
    with engine.connect() as conn:
        for chunk in _chunks(wanted):
            for r in conn.execute(sa.select(schedule_executions.c.id, schedule_executions.c.agent_name,
                                            schedule_executions.c.status, schedule_executions.c.error)
                                  .where(schedule_executions.c.id.in_(chunk))):
                rows[r.id] = r
            executions.update(db.get_executions(conn, chunk))
            for r in conn.execute(sa.select(recoveries).where(recoveries.c.execution_id.in_(chunk))):
                outbox[r.execution_id] = r
            for execution_id, n in conn.execute(
                    sa.select(decisions.c.execution_id, sa.func.count())
                    .where(decisions.c.execution_id.in_(chunk), decisions.c.outcome == "recovered")
                    .group_by(decisions.c.execution_id)):
                wins[execution_id] = int(n)
    agents = sorted({started[i].agent for i in wanted if i in started} | {r.agent_name for r in rows.values()})
    held = {agent: slots.held(agent) for agent in agents}

    f = Findings()
    for execution_id in wanted:
        row = rows.get(execution_id)
        s = started.get(execution_id)
        if row is None or s is None:
            continue  # never written (the database was down when it was started)
        f.checked += 1
        execution = executions.get(execution_id)
        fault = fault_moment(s, fault_at.get(execution_id), execution if isinstance(execution, db.Execution) else None)
        lost = fault is not None and fault <= now
        if lost:
            f.lost.append(execution_id)
        recovery = outbox.get(execution_id)
        events = announced.get(execution_id, 0)
        has_slot = execution_id in held.get(row.agent_name, set())
        if recovery is not None:
            f.recovered.append(execution_id)
            recovered_at = parse_utc(recovery.recovered_at)
            # A leak's release changes no row: it is wrong only if the row is still running. A normal
            # run that ended while Redis was down holds its slot until its writer retries; releasing
            # it first is Trinity's leak rule, not a kill.
            harmless = recovery.action == RELEASE_LEAKED_SLOT and row.status != "running"
            if not harmless and (fault is None or recovered_at < fault - CLOCK_TOLERANCE):
                f.false_kills.append(execution_id)
            elif fault is not None:
                f.time_to_recovery[execution_id] = (recovered_at - fault).total_seconds()
            if recovery.slot_released_at is None or recovery.announced_at is None:
                f.unfinished.append(execution_id)
            elif events == 0:
                f.unannounced.append(execution_id)
            if events > 1 or wins[execution_id] > 1:
                f.duplicates.append(execution_id)
        else:
            if events:
                f.duplicates.append(execution_id)  # announced without a recovery: never fine
            if row.status == "failed" and "by watchdog" in (row.error or ""):
                f.false_kills.append(execution_id)
            if lost and row.status == "running":
                f.pending.append(execution_id)
        owed = execution_id in f.unfinished  # its release is still to come: unfinished, not leaked
        if has_slot and row.status != "running" and not owed:
            f.leaked_slots.append(f"{row.agent_name}/{execution_id}")
        # An expire_slot run's slot is past its TTL from the start: removing it while the agent lists
        # the run is Trinity's own rule, not a theft.
        if not has_slot and row.status == "running" and recovery is None and s.fault != "expire_slot":
            f.stolen_slots.append(f"{row.agent_name}/{execution_id}")
    return f
