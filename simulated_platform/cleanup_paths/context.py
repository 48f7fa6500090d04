"""What every path of the simulated cleanup cycle shares: the platform's stores, its clock, and
the one place a decision is either written or, in shadow, only recorded.

A decision is named in the shared action vocabulary (``exec_watchdog.common.contract``'s
remediation values), so Trinity's side and ours can be compared one execution at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from exec_watchdog.platform_access import activities
from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.agent_client import AgentClient
from exec_watchdog.platform_access.database import database_now
from exec_watchdog.platform_access.inflight import InflightStore
from exec_watchdog.platform_access.slots import SlotStore


@dataclass(frozen=True, slots=True)
class Decision:
    """One ending Trinity's cleanup made (or, in shadow, would have made)."""

    execution_id: str  # for a stale activity without an execution: the activity's id
    agent: str
    action: str  # the shared vocabulary: fail_orphan, fail_stale, reclaim_expired_slot, ...
    at: datetime  # the database's clock when it was written (or would have been)
    text: str  # the error text written, or the claimed status
    written: bool  # False in shadow: nothing was changed


@dataclass
class Ledger:
    """Every decision of a run, in order; in shadow each (execution, action) is kept once (the row
    stays as it was, so every later cycle would decide it again)."""

    decisions: list[Decision] = field(default_factory=list)
    _seen: set[tuple[str, str]] = field(default_factory=set)

    def add(self, decision: Decision) -> bool:
        key = (decision.execution_id, decision.action)
        if not decision.written and key in self._seen:
            return False
        self._seen.add(key)
        self.decisions.append(decision)
        return True

    def first(self, execution_id: str) -> Decision | None:
        return next((d for d in self.decisions if d.execution_id == execution_id), None)


@dataclass
class CleanupContext:
    """The platform as a cleanup path sees it. ``shadow``: decide, record, change nothing."""

    engine: sa.Engine
    slots: SlotStore
    inflight: InflightStore
    agents: AgentClient
    shadow: bool = False
    close_activities: bool = True  # Trinity closes the run's activity on every recovery
    claim_defer_seconds: float = 180.0  # a result retained more recently is not claimed yet (Trinity #2944)
    ledger: Ledger = field(default_factory=Ledger)
    on_decision: Callable[[Decision], None] = lambda decision: None
    epoch: Callable[[], float] = time.time  # slot scores are epoch seconds

    def now(self) -> datetime:
        with self.engine.connect() as conn:
            return database_now(conn)

    def decide(self, execution_id: str, agent: str, action: str, text: str, at: datetime,
               write: Callable[[sa.Connection], bool]) -> bool:
        """Write (one transaction, the path's compare-and-set) and record it when it won; in shadow
        only record it. True when the decision was written or, in shadow, newly recorded."""
        if self.shadow:
            decision = Decision(execution_id, agent, action, at, text, written=False)
            recorded = self.ledger.add(decision)
            if recorded:
                self.on_decision(decision)
            return recorded
        with self.engine.begin() as conn:
            won = write(conn)
        if won:
            decision = Decision(execution_id, agent, action, at, text, written=True)
            self.ledger.add(decision)
            self.on_decision(decision)
        return won

    def fail(self, row: db.Execution, action: str, text: str, at: datetime, activity_error: str, *,
             every_open_activity: bool = False) -> bool:
        """Trinity's guarded ``running → failed`` with ``text``, and the run's activity closed as
        failed in the same transaction (the sweeps close every open one, the other paths the pair)."""

        def write(conn: sa.Connection) -> bool:
            if not db.fail_execution(conn, row, text, at):
                return False
            if every_open_activity:
                self.close_all_open(conn, row.id, activity_error, at)
            else:
                self.close_one(conn, row.id, "failed", activity_error, at)
            return True

        return self.decide(row.id, row.agent_name, action, text, at, write)

    def close_one(self, conn: sa.Connection, execution_id: str, status: str, error: str | None,
                  at: datetime) -> None:
        if self.close_activities:
            activities.close_one(conn, execution_id, status, error, at)

    def close_all_open(self, conn: sa.Connection, execution_id: str, error: str, at: datetime) -> None:
        if self.close_activities:
            activities.close_all_open(conn, execution_id, error, at)

    def release_slot(self, agent: str, execution_id: str) -> None:
        """Remove exactly this run's slot (never in shadow)."""
        if not self.shadow:
            self.slots.release(agent, execution_id)
