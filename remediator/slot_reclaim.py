"""Reclaiming a capacity slot: Trinity's Phase 3 order and its leak sweep, every rule in one place.

The slot rules themselves (TTL, expiry, leak, ``drain-…``, ``governor:pause``) are
``platform_access/slot_expiry.py``. At action time, for ``reclaim_expired_slot`` and
``reclaim_slot_unreachable`` (a slot past its TTL), in this order:

1. ``governor:pause`` exists → skipped (Trinity skips the whole slot phase);
2. the slot is not held any more, is a ``drain-…`` placeholder, or is no longer past its TTL (a
   parked dispatch renews its score) → skipped;
3. the row is missing or finished → only the slot is released (it is a leak); the row is
   ``queued``/``pending_retry`` or a lease row → only the slot is released (Trinity removes every
   expired slot; no path touches those rows);
4. the row is ``running``: the agent is asked (``GET /api/executions/running``):
   - not answering (no connection, no answer in time, a 5xx) → for ``reclaim_slot_unreachable`` the row is failed
     with the #497 text. Trinity does so on one unanswered call; we only on this remediation, whose
     alert fired after the agent stayed unreachable for the whole ``slot_unreachable_for``, and
     only if it is still unreachable now. For ``reclaim_expired_slot`` → skipped (that alert
     decides). Any other failed answer (401, 404, a garbled body) is not unreachability → retry;
   - the agent lists the run (running, pending or recently completed) → only the slot is released;
5. the in-flight marker: alive or unreadable → only the slot is released;
6. otherwise the run is terminated on the agent, best effort (its answer never stops us), and
   failed with ``lease_expired: Stale execution — slot TTL expired for agent '{agent}', cleaned by
   cleanup service``.

For ``release_leaked_slot``: paused, not held, or acquired less than 15 s ago → skipped; the row
missing or ``success``/``failed``/``cancelled``/``skipped`` → the slot is released; any other row
(``running``, ``queued``, ``pending_retry``) → skipped.

A failure goes through the guarded ``running → failed`` transition; the slot is released and the
recovery announced by the common finish step, exactly once. A leak's release (row missing or
finished) is a recovery too (action ``release_leaked_slot``): an action claim makes one delivery its
owner, the outbox row makes its release and announcement happen exactly once. Removing the slot of
a row that stays as it is (listed, held by a dispatcher, queued, a lease row) is announced to
nobody, as in Trinity: the atomic removal itself picks the one delivery that did it (``recovered``;
the others ``lost_race``), and the run, when it ends later, gets its own single recovery.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import anyio.to_thread
import redis
import sqlalchemy as sa

from exec_watchdog.common.contract import RECLAIM_SLOT_UNREACHABLE, RELEASE_LEAKED_SLOT, Outcome
from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access import inflight as markers
from exec_watchdog.platform_access import slot_expiry
from exec_watchdog.platform_access.agent_client import AgentClient, AgentResult, RunningSnapshot
from exec_watchdog.platform_access.slot_expiry import SlotEntry, SlotRow
from exec_watchdog.platform_access.slots import SlotStore
from exec_watchdog.remediator import action_claims, texts
from exec_watchdog.remediator.deadlines import AgentGate
from exec_watchdog.remediator.evidence import Evidence, timed
from exec_watchdog.remediator.payload import Alert

T = TypeVar("T")

Step = Literal["skip", "retry", "ask_agent", "ask_marker", "release", "fail", "terminate_and_fail"]
# Not answering: no connection, no answer in time, or a 5xx (a container going away). A 401, a
# 404 or a garbled body is an answer: our configuration or the image is wrong, not the agent gone.
_UNREACHABLE = ("unreachable", "timeout", "server_error")


@dataclass(frozen=True, slots=True)
class SlotDecision:
    step: Step
    reason: str = ""
    text: str = ""  # the failure text (fail, terminate_and_fail)
    leak: bool = False  # a release because the row is missing or finished (announced), not a live row's


@dataclass(frozen=True, slots=True)
class SlotSeen:
    """Everything known about one slot at action time; ``None`` for what was not asked yet."""

    remediation: str
    agent: str
    execution_id: str
    paused: bool
    slot: SlotEntry | None
    ttl_seconds: float
    now: float  # epoch seconds, on the database's clock
    row: db.Execution | db.BadRow | None
    answer: AgentResult[RunningSnapshot] | None = None
    marker: markers.Verdict | None = None


def decide(seen: SlotSeen) -> SlotDecision:
    """The next step for one slot, from what is known so far (the module docstring's rules)."""
    if seen.paused:
        return SlotDecision("skip", "governor:pause exists: Trinity's re-delivery governor pauses slot cleanup")
    if seen.slot is None:
        return SlotDecision("skip", "the slot is not held (released meanwhile)")
    if slot_expiry.is_placeholder(seen.execution_id):
        return SlotDecision("skip", "a drain- placeholder of the capacity manager: never touched")
    if isinstance(seen.row, db.BadRow):
        return SlotDecision("skip", f"unreadable row: {seen.row}")
    age = seen.slot.age_seconds(seen.now)
    row = None if seen.row is None else SlotRow(seen.row.status, seen.row.leased)
    leak = slot_expiry.leaked_status(row)
    if seen.remediation == RELEASE_LEAKED_SLOT:
        if age < slot_expiry.LEAK_GRACE_SECONDS:
            return SlotDecision("skip", f"acquired {age:.1f} s ago: younger than the "
                                        f"{slot_expiry.LEAK_GRACE_SECONDS:g} s grace")
        if leak is None:
            return SlotDecision("skip", f"the row is {row.status if row else '?'!r}: not a leak")
        return SlotDecision("release", _leak_reason(leak), leak=True)
    if age <= seen.ttl_seconds:
        return SlotDecision("skip", f"not expired: acquired {age:.0f} s ago, TTL {seen.ttl_seconds:g} s")
    if leak is not None:
        return SlotDecision("release", f"slot TTL expired; {_leak_reason(leak)}", leak=True)
    assert row is not None
    if row.status != "running" or row.leased:
        what = "a lease row (another reaper's)" if row.leased else f"{row.status!r}"
        return SlotDecision("release", f"slot TTL expired; the row is {what}: slot removed, row left alone")
    if seen.answer is None:
        return SlotDecision("ask_agent")
    if seen.answer.kind in _UNREACHABLE:
        if seen.remediation == RECLAIM_SLOT_UNREACHABLE:
            return SlotDecision("fail", text=texts.slot_unreachable_text(seen.agent))
        return SlotDecision("skip", f"agent not answering now ({seen.answer.kind}): the unreachable alert "
                                    "decides once it stays so for slot_unreachable_for")
    if not seen.answer.answered:
        return SlotDecision("retry", f"agent answered {seen.answer.kind}: {seen.answer.detail}; "
                                     "that is not unreachability")
    snapshot = seen.answer.unwrap()
    if seen.execution_id in (snapshot.running_ids | snapshot.pending_ids | snapshot.recently_completed_ids):
        return SlotDecision("release", "slot TTL expired; the agent still lists the run: slot removed, row left "
                                       "running")
    if seen.marker is None:
        return SlotDecision("ask_marker")
    if seen.marker is not markers.Verdict.ABSENT:
        what = "alive" if seen.marker is markers.Verdict.ALIVE else "unreadable"
        return SlotDecision("release", f"slot TTL expired; in-flight marker {what}: slot removed, row left running")
    return SlotDecision("terminate_and_fail", text=texts.slot_expired_text(seen.agent))


def _leak_reason(status: str) -> str:
    what = "has no row" if status == slot_expiry.MISSING else f"row is {status!r}"
    return f"leaked slot: the execution {what}; exactly that slot released"


class Subject(Protocol):
    """What this module reads and sets on one alert's verdict."""

    alert: Alert
    execution: db.Execution | None
    error: str
    evidence: Evidence
    slot_only: bool  # release the slot, change no row
    slot_leak: bool  # slot_only because the row is missing or finished: a recovery, announced
    terminate_first: bool
    slot_age_seconds: float

    def decide(self, outcome: Outcome, reason: str) -> None: ...


@dataclass(slots=True)
class SlotCheck:
    engine: sa.Engine
    slots: SlotStore
    agents: AgentClient
    gate: AgentGate  # shared with every other agent request of the remediator
    inflight: markers.InflightStore | None

    async def verify(self, verdicts: Sequence[Subject], rows: Mapping[str, db.Execution | db.BadRow],
                     now: float) -> None:
        """Decide each verdict, or leave it undecided with ``error`` (and ``slot_only`` or
        ``terminate_first``) set for the common transition and finish."""
        if not verdicts:
            return
        (paused, found, timeouts), took = await timed(anyio.to_thread.run_sync(self._read, verdicts))
        seen: dict[int, SlotSeen] = {}
        for v in verdicts:
            entry = found[(v.alert.agent, v.alert.execution_id)]
            ttl = slot_expiry.ttl_seconds(entry, timeouts) if entry else 0.0
            v.evidence.slot_read(entry is not None, paused=paused, acquired_at=entry.acquired_at if entry else None,
                                 age_seconds=entry.age_seconds(now) if entry else None, ttl_seconds=ttl,
                                 hash_timeout_seconds=entry.timeout_seconds if entry else None, seconds=took)
            v.slot_age_seconds = entry.age_seconds(now) if entry else 0.0
            seen[id(v)] = SlotSeen(v.alert.remediation, v.alert.agent, v.alert.execution_id, paused, entry, ttl,
                                   now, rows.get(v.alert.execution_id))
        decisions = {id(v): decide(seen[id(v)]) for v in verdicts}
        asking = [v for v in verdicts if decisions[id(v)].step == "ask_agent"]
        answers = await self._ask_agents(asking)
        for v in asking:
            seen[id(v)] = _replace(seen[id(v)], answer=answers[v.alert.agent])
            decisions[id(v)] = decide(seen[id(v)])
        reading = [v for v in verdicts if decisions[id(v)].step == "ask_marker"]
        for v, verdict in zip(reading, await self._read_markers(reading), strict=True):
            seen[id(v)] = _replace(seen[id(v)], marker=verdict)
            decisions[id(v)] = decide(seen[id(v)])
        for v in verdicts:
            self._apply(v, decisions[id(v)], rows.get(v.alert.execution_id))

    def _read(self, verdicts: Sequence[Subject]) -> tuple[bool, dict[tuple[str, str], SlotEntry | None],
                                                          dict[str, int]]:
        paused = self.slots.paused()
        found = {(v.alert.agent, v.alert.execution_id): self.slots.entry(v.alert.agent, v.alert.execution_id)
                 for v in verdicts}
        without_hash = {agent for (agent, _), e in found.items() if e is not None and e.timeout_seconds is None}
        timeouts: dict[str, int] = {}
        if without_hash:
            with self.engine.connect() as conn:
                timeouts = slot_expiry.agent_timeouts(conn, without_hash)
        return paused, found, timeouts

    async def _ask_agents(self, verdicts: Sequence[Subject]) -> dict[str, AgentResult[RunningSnapshot]]:
        agents = sorted({v.alert.agent for v in verdicts})

        async def ask(agent: str) -> tuple[AgentResult[RunningSnapshot], float]:
            return await timed(self._busy_is_no_answer(agent, self.agents.running(agent)))

        answers = dict(zip(agents, await asyncio.gather(*(ask(a) for a in agents)), strict=True))
        for v in verdicts:
            v.evidence.agent_answer(*answers[v.alert.agent])
        return {agent: answer for agent, (answer, _) in answers.items()}

    async def _read_markers(self, verdicts: Sequence[Subject]) -> list[markers.Verdict]:
        if not verdicts:
            return []
        if self.inflight is None:
            return [markers.Verdict.ABSENT for _ in verdicts]  # nobody writes markers here
        store = self.inflight
        found, took = await timed(anyio.to_thread.run_sync(
            lambda: store.verdicts(v.alert.execution_id for v in verdicts)))
        out = [found.get(v.alert.execution_id, markers.Verdict.UNKNOWN) for v in verdicts]
        for v, verdict in zip(verdicts, out, strict=True):
            v.evidence.inflight(verdict.value, seconds=took)
        return out

    def _apply(self, v: Subject, decision: SlotDecision, row: db.Execution | db.BadRow | None) -> None:
        if decision.step == "skip":
            return v.decide("skipped", decision.reason)
        if decision.step == "retry":
            return v.decide("retry", decision.reason)
        v.execution = row if isinstance(row, db.Execution) else None
        if decision.step == "release":
            v.slot_only, v.slot_leak, v.error = True, decision.leak, decision.reason
        else:
            v.error = decision.text
            v.terminate_first = decision.step == "terminate_and_fail"
        return None

    async def terminate(self, v: Subject) -> None:
        """Best effort, as Trinity: whatever the agent answers, the run is failed next."""
        answer, took = await timed(self._busy_is_no_answer(v.alert.agent, self.agents.terminate(
            v.alert.agent, v.alert.execution_id)))
        v.evidence.terminate_answer(answer, took)

    def remove_quietly(self, v: Subject) -> None:
        """Remove the slot of a row left as it is: no outbox, no announcement; one remover wins."""
        try:
            removed = self.slots.release(v.alert.agent, v.alert.execution_id)
        except (redis.RedisError, sa.exc.SQLAlchemyError, OSError) as exc:
            return v.decide("retry", f"slot store unavailable: {type(exc).__name__}")
        if removed:
            return v.decide("recovered", v.error)
        return v.decide("lost_race", "the slot was removed meanwhile")

    def claim_release(self, v: Subject, holder: str, ttl_seconds: float) -> str | None:
        """Own a slot-only release (one delivery, one replica); None when owned, else why not.

        The claim is left to expire: by then the slot is gone, so a late duplicate finds nothing.
        """
        if not action_claims.take(self.engine, v.alert.execution_id, holder, ttl_seconds):
            return "another replica or delivery is releasing it"
        if self.slots.entry(v.alert.agent, v.alert.execution_id) is None:
            return "the slot was released meanwhile"
        return None


    def _busy_is_no_answer(self, agent: str, call: Coroutine[Any, Any, AgentResult[T]]) -> Awaitable[AgentResult[T]]:
        # Our own queue, not the agent's silence: a busy turn never counts as unreachable.
        return self.gate.call(agent, call, busy_kind="bad_response",
                              busy_note="not asked, the remediator's agent calls are busy: ")


def _replace(seen: SlotSeen, **changes: Any) -> SlotSeen:
    return dataclasses.replace(seen, **changes)
