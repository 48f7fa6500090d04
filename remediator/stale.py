"""Ending what Trinity's cleanup sweeps end: stale runs (Phase 1) and runs without a session (Phase 1b).

Every rule, in order (``decide`` applies them; ``SweepCheck`` gathers what they read):

1. The row: still ``running`` without a lease and of the alert's agent (``remediate._verify_row``).
   Rows of soft-deleted agents are these sweeps' too, as in Trinity.
2. Its window, on the database's clock, strictly past it as Trinity counts:
   - ``fail_stale``: the agent's COALESCE(execution_timeout_seconds, 3600) + the grace (Trinity's
     300 s), or a flat 7,200 s when the agent is unknown to agent_ownership or soft-deleted;
   - ``fail_no_session``: claude_session_id still NULL or '' (a backend that dispatched it wrote
     ``dispatched`` / ``dispatched_async`` or the session there) and older than 60 s.
   Not past it → skipped.
3. The agent is asked again (``GET /api/executions/running``):
   - it lists the run (running, pending or recently completed) → skipped: a run still executing
     is the overdue path's, which terminates it before failing it; a recently completed one has a
     result to claim. Trinity's sweeps ask no agent and would fail it: we never fail a run that may
     still be executing without stopping it;
   - it answers without the run → ``fail_no_session`` leaves it to the orphan path, which claims a
     retained result first and writes the orphan text, as Trinity's cycle runs its watchdog before
     its sweeps; so does ``fail_stale`` for its first ``orphan_grace_seconds`` past the window (the
     claim deferral + 120 s: after an outage the agent answers again and a kept result must be
     claimed, not failed stale), then fails it, as Trinity's Phase 1 fails a row its watchdog left
     (its ``/result`` failing, say). A soft-deleted agent's row is never the orphan path's: failed;
   - 401 → retry: our credentials are wrong, which says nothing about the run;
   - no usable answer (unreachable, timeout, 404/5xx, bad body) → failed, unless step 4 holds it.
4. The fleet guard: ``ExecWatchdogFleetUnreachable`` active in Alertmanager, or Alertmanager not
   answering → retry, never failed on an agent's silence while the fault may be our own network.

Texts are Trinity's exactly (``remediator/texts.py``), without a ``/last-error`` prefix: Trinity's
sweeps do not ask the agent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from exec_watchdog.common.contract import FAIL_NO_SESSION, FAIL_STALE, Outcome
from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.agent_client import AgentClient, AgentResult, RunningSnapshot
from exec_watchdog.remediator import texts
from exec_watchdog.remediator.deadlines import AgentGate
from exec_watchdog.remediator.evidence import Evidence, timed
from exec_watchdog.remediator.fleet import NOT_CHECKED, FleetGuard, FleetState
from exec_watchdog.remediator.payload import Alert

STALE_GRACE_SECONDS = 300  # Trinity's SLOT_TTL_BUFFER, added to the agent's timeout
STALE_UNOWNED_SECONDS = 7_200  # Trinity's EXECUTION_STALE_TIMEOUT_MINUTES, for unknown or deleted agents
NO_SESSION_SECONDS = 60  # Trinity's NO_SESSION_TIMEOUT_SECONDS
ORPHAN_GRACE_SECONDS = 300  # the claim deferral (180 s) + 120 s: the orphan path's turn on a stale run

Step = Literal["fail", "skip", "retry"]


@dataclass(frozen=True, slots=True)
class Windows:
    """The sweeps' numbers; the rules' profile holds the same (stale_grace_seconds, …)."""

    stale_grace_seconds: int = STALE_GRACE_SECONDS
    stale_unowned_seconds: int = STALE_UNOWNED_SECONDS
    no_session_seconds: int = NO_SESSION_SECONDS
    # How long past its window a stale run whose agent answers without it is left to the orphan path.
    orphan_grace_seconds: int = ORPHAN_GRACE_SECONDS

    def __post_init__(self) -> None:
        if min(self.stale_grace_seconds, self.stale_unowned_seconds, self.no_session_seconds,
               self.orphan_grace_seconds) < 0:
            raise ValueError("the sweeps' windows cannot be negative")

    def of(self, remediation: str, row: db.Execution) -> int:
        if remediation == FAIL_NO_SESSION:
            return self.no_session_seconds
        if row.agent_timeout_seconds is None:
            return self.stale_unowned_seconds
        return row.agent_timeout_seconds + self.stale_grace_seconds


@dataclass(frozen=True, slots=True)
class SweepDecision:
    step: Step
    reason: str
    text: str = ""  # the failure text, when step is "fail"


def premise(remediation: str, row: db.Execution, now: datetime, windows: Windows) -> SweepDecision | None:
    """Rule 2: a skip when the row is not (or no longer) the sweep's, else None. No I/O."""
    if remediation not in (FAIL_STALE, FAIL_NO_SESSION):
        raise ValueError(f"not a cleanup sweep: {remediation!r}")
    age, window = row.runtime_seconds(now), windows.of(remediation, row)
    if remediation == FAIL_NO_SESSION and not row.session_missing:
        return SweepDecision("skip", "it has a Claude session now")
    if age <= window:
        what = "stale window" if remediation == FAIL_STALE else "no-session age"
        return SweepDecision("skip", f"not past its {what}: {age:.0f} s of {window} s")
    return None


def decide(remediation: str, row: db.Execution, now: datetime, answer: AgentResult[RunningSnapshot],
           fleet: FleetState = NOT_CHECKED, windows: Windows = Windows()) -> SweepDecision:
    """Every rule, given the row, the database's clock, the agent's answer and the fleet guard."""
    early = premise(remediation, row, now, windows)
    if early is not None:
        return early
    if answer.answered:
        snapshot = answer.unwrap()
        if row.id in snapshot.running_ids or row.id in snapshot.pending_ids:
            return SweepDecision("skip", "the agent still runs it: the overdue path terminates it before it is failed")
        if row.id in snapshot.recently_completed_ids:
            return SweepDecision("skip", "the agent lists it as recently completed: its result is claimed")
        if remediation == FAIL_NO_SESSION:
            return SweepDecision("skip", "the agent answers without it: the orphan path decides it "
                                         "(Trinity runs its watchdog before the no-session sweep)")
        past = row.runtime_seconds(now) - windows.of(remediation, row)
        if not row.agent_deleted and past <= windows.orphan_grace_seconds:
            return SweepDecision("skip", f"the agent answers without it: the orphan path decides it first (it "
                                         f"claims a kept result), for {windows.orphan_grace_seconds} s past the "
                                         f"stale window ({past:.0f} s now), as Trinity runs its watchdog before "
                                         "the stale sweep")
        return SweepDecision("fail", "stale and not listed by its agent", _text(remediation, row, windows))
    if answer.kind == "unauthorized":
        return SweepDecision("retry", "the agent refused our credentials: that says nothing about the run")
    if fleet.holds:
        return SweepDecision("retry", f"the agent does not answer ({answer.kind}) and the fleet guard holds "
                                      f"every such remediation: {fleet.describe()}")
    return SweepDecision("fail", f"the agent does not answer ({answer.kind}): {answer.detail}".rstrip(": "),
                         _text(remediation, row, windows))


def _text(remediation: str, row: db.Execution, windows: Windows) -> str:
    window = windows.of(remediation, row)
    return texts.stale_text(window) if remediation == FAIL_STALE else texts.no_session_text(window)


class Subject(Protocol):
    """What this module reads and decides of one alert's verdict."""

    alert: Alert
    execution: db.Execution | None
    error: str
    evidence: Evidence

    def decide(self, outcome: Outcome, reason: str) -> None: ...


@dataclass(slots=True)
class SweepCheck:
    agents: AgentClient
    gate: AgentGate  # shared with every other agent request of the remediator
    fleet: FleetGuard | None
    windows: Windows = Windows()

    async def verify(self, verdicts: Sequence[Subject], now: datetime) -> None:
        """Decide each verdict, or leave it undecided with ``error`` set (the failure to write).

        ``now`` is the database's clock. Each agent is asked once; the fleet guard once, and only
        when an agent did not answer.
        """
        pending: list[Subject] = []
        for v in verdicts:
            assert v.execution is not None
            early = premise(v.alert.remediation, v.execution, now, self.windows)
            if early is not None:
                self._record(v, now, NOT_CHECKED)
                v.decide("skipped", early.reason)
            else:
                pending.append(v)
        agents = sorted({v.alert.agent for v in pending})
        answers = dict(zip(agents, await asyncio.gather(*(timed(self._running(a)) for a in agents)), strict=True))
        fleet = NOT_CHECKED
        if self.fleet is not None and any(not answers[v.alert.agent][0].answered for v in pending):
            fleet = await self.fleet.state()
        for v in pending:
            assert v.execution is not None
            answer, took = answers[v.alert.agent]
            v.evidence.agent_answer(answer, took)
            self._record(v, now, fleet)
            decision = decide(v.alert.remediation, v.execution, now, answer, fleet, self.windows)
            if decision.step == "fail":
                v.error = decision.text
            else:
                v.decide("skipped" if decision.step == "skip" else "retry", decision.reason)

    def _record(self, v: Subject, now: datetime, fleet: FleetState) -> None:
        assert v.execution is not None
        v.evidence.sweep(v.alert.remediation, window_seconds=self.windows.of(v.alert.remediation, v.execution),
                         age_seconds=v.execution.runtime_seconds(now), session_missing=v.execution.session_missing,
                         fleet=fleet.describe())

    async def _running(self, agent: str) -> AgentResult[RunningSnapshot]:
        return await self.gate.call(agent, self.agents.running(agent))
