"""Is a run really lost? At action time: the agent's word, the in-flight marker, then its retained result.

For ``fail_orphan`` and ``claim_result`` alerts, in Trinity's order:

1. ``GET /api/executions/running`` again: running or pending → nothing to do; not answered → retry.
2. The in-flight markers of the rest, one read for the batch: a live dispatcher → nothing to do;
   markers unreadable and the run younger than the in-flight bound → retry.
3. The retained result (``remediator/claim.py`` has every rule): claim it, fail the run, wait or retry.

Before a run is failed (here or after a terminate) the agent's ``/last-error`` is asked (2 s) and
put first in the text (``remediator/texts.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import anyio.to_thread
import structlog

from exec_watchdog.common.contract import CLAIM_RESULT, Outcome
from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access import inflight as markers
from exec_watchdog.platform_access.agent_client import AgentClient, AgentResult, LastError, RunningSnapshot
from exec_watchdog.platform_access.timestamps import utcnow
from exec_watchdog.remediator import claim, isolation, texts
from exec_watchdog.remediator.deadlines import AgentGate
from exec_watchdog.remediator.evidence import Evidence, timed
from exec_watchdog.remediator.payload import Alert

log = structlog.get_logger("exec_watchdog.remediator")

LAST_ERROR_TIMEOUT_SECONDS = 2.0  # Trinity's ERROR_FETCH_TIMEOUT


class Subject(Protocol):
    """What this module reads and decides of one alert's verdict."""

    alert: Alert
    execution: db.Execution | None
    outcome: Outcome
    error: str
    claim: db.Claim | None
    retained_at: datetime | None
    evidence: Evidence

    def decide(self, outcome: Outcome, reason: str) -> None: ...

    @property
    def undecided(self) -> bool: ...


@dataclass(slots=True)
class OrphanCheck:
    agents: AgentClient
    gate: AgentGate  # shared with every other agent request of the remediator
    inflight: markers.InflightStore | None
    min_orphan_age_seconds: float
    claim_defer_seconds: float = claim.CLAIM_DEFER_SECONDS
    inflight_max_age_seconds: float = markers.DEFAULT_MAX_AGE_SECONDS

    async def verify(self, verdicts: Sequence[Subject], now: datetime) -> None:
        """Decide each verdict, or leave it undecided with ``error`` (a failure) or ``claim`` set.

        ``now`` is the database's clock: ages compare it with the ``started_at`` the platform wrote.
        """
        by_agent: dict[str, list[Subject]] = {}
        for v in verdicts:
            by_agent.setdefault(v.alert.agent, []).append(v)

        async def ask(agent: str) -> tuple[str, tuple[AgentResult[RunningSnapshot], float]]:
            try:
                return agent, await timed(self.gate.call(agent, self.agents.running(agent)))
            except Exception as exc:  # this agent's alerts retry; the other agents' go on
                log.error("agent_call_failed", agent=agent[:200], error_type=type(exc).__name__, exc_info=exc)
                return agent, (AgentResult("bad_response", detail=f"asking the agent failed: {type(exc).__name__}"),
                               0.0)

        candidates: list[tuple[Subject, RunningSnapshot]] = []
        for agent, (answer, took) in await asyncio.gather(*(ask(a) for a in by_agent)):
            running = answer.value.running_ids if answer.answered and answer.value is not None else frozenset()
            for v in by_agent[agent]:
                v.evidence.agent_answer(answer, took)
                if not answer.answered:
                    v.decide("retry", f"agent not asked ({answer.kind}): {answer.detail}; unreachable is not orphaned")
                    continue
                snapshot, execution_id = answer.unwrap(), v.alert.execution_id
                if execution_id in running or execution_id in snapshot.pending_ids:  # running: built once per agent
                    v.decide("skipped", "agent knows the execution (running or pending)")
                elif execution_id not in snapshot.recently_completed_ids and _age(v, now) < self.min_orphan_age_seconds:
                    v.decide("skipped", f"too young to be an orphan: {_age(v, now):.1f} s")
                else:
                    candidates.append((v, snapshot))
        await self._check_inflight([v for v, _ in candidates], now)
        candidates = [(v, snapshot) for v, snapshot in candidates if v.undecided]
        snapshots = {id(v): snapshot for v, snapshot in candidates}

        async def retained(v: Subject) -> None:
            answer, took = await timed(self._retained(v))
            self._apply(v, snapshots[id(v)], answer, took)

        await isolation.each([v for v, _ in candidates], retained, "asking the agent's retained result")

    async def _check_inflight(self, verdicts: list[Subject], now: datetime) -> None:
        """A run a backend dispatcher still holds is never an orphan (one read for the whole batch)."""
        if not verdicts or self.inflight is None:
            return
        store = self.inflight
        found, took = await timed(anyio.to_thread.run_sync(
            lambda: store.verdicts(v.alert.execution_id for v in verdicts)))
        for v in verdicts:
            verdict = found.get(v.alert.execution_id, markers.Verdict.UNKNOWN)
            v.evidence.inflight(verdict.value, seconds=took)
            if not markers.withholds(verdict, _age(v, now), self.inflight_max_age_seconds):
                continue
            if verdict is markers.Verdict.ALIVE:
                v.decide("skipped", "a backend dispatcher still holds it (in-flight marker alive)")
            else:
                v.decide("retry", "in-flight markers unreadable and the run is younger than "
                                  f"{self.inflight_max_age_seconds:g} s: it may still be in flight")


    async def _retained(self, v: Subject) -> AgentResult[object]:
        answer = await self.gate.call(v.alert.agent, self.agents.result(v.alert.agent, v.alert.execution_id))
        return AgentResult(answer.kind, answer.value, answer.detail)

    def _apply(self, v: Subject, snapshot: RunningSnapshot, answer: AgentResult[object], took: float) -> None:
        recently_completed = v.alert.execution_id in snapshot.recently_completed_ids
        decision = claim.decide(answer, execution_id=v.alert.execution_id, recently_completed=recently_completed,
                                now=utcnow(), defer_seconds=self.claim_defer_seconds)
        result = decision.result
        v.evidence.retained_result(decision.step, status=result.status if result else None,
                                   retained_at=result.retained_at.isoformat() if result else None,
                                   detail=decision.reason or answer.detail, seconds=took,
                                   cost_refused=result.cost_refused if result else None)
        if decision.step == "claim":
            assert decision.result is not None
            v.claim = claim.claim_of(decision.result)
            v.retained_at = decision.result.retained_at
            v.error = claim.announcement_reason(v.claim)
        elif decision.step in ("fail", "fail_no_record") and v.alert.remediation == CLAIM_RESULT:
            v.decide("skipped", "no retained result, and no longer listed as recently completed: "
                                "the orphan alert takes it (a claim_result alert never fails a run)")
        elif decision.step in ("fail", "fail_no_record"):
            v.error = texts.orphan_text(v.alert.agent, reports_pending=snapshot.reports_pending,
                                        no_retained_result=decision.step == "fail_no_record")
        else:
            v.decide("skipped" if decision.step == "wait" else "retry", decision.reason)

    async def prefix_last_error(self, v: Subject) -> None:
        """Trinity asks /last-error (2 s) before failing a run and puts what it says first."""
        try:
            async with asyncio.timeout(LAST_ERROR_TIMEOUT_SECONDS):  # no task of its own, as wait_for made
                answer, took = await timed(
                    self.gate.call(v.alert.agent, self.agents.last_error(v.alert.agent, v.alert.execution_id)))
        except TimeoutError:
            answer, took = AgentResult("timeout"), LAST_ERROR_TIMEOUT_SECONDS
        v.evidence.last_error(answer, took)
        last: LastError | None = answer.value if answer.answered else None
        v.error = texts.with_last_error(v.error, last)


def _age(v: Subject, now: datetime) -> float:
    assert v.execution is not None
    return v.execution.runtime_seconds(now)
