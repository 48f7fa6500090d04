"""Re-verify, then act: the decisions the remediator takes for one webhook notification.

The alert is a hint; the database and the agent are the truth. Every alert ends in exactly one
outcome, written to the audit trail:

- ``recovered``      this call won the guarded transition: failed, or a retained result claimed
                     (then: release slot, announce)
- ``would_recover``  dry-run: everything verified, nothing changed
- ``lost_race``      verified, but another writer changed the row first
- ``skipped``        re-verification says there is nothing to do (the reason says why)
- ``silenced``       a silence made after the notification left now covers the alert
- ``breaker_open``   the breaker stopped remediation (answered 503: Alertmanager retries later)
- ``retry``          a transient failure (agent, Alertmanager or database); answered 503
- ``ignored``        not ours to act on (resolved, unknown remediation label, unsafe identifiers)

One alert's failure, whatever the exception, is that alert's ``retry`` (``remediator/isolation.py``):
the other alerts of the notification are still acted on. Every text stored or sent (reasons,
failure texts, recovery rows) goes through the process's redactor (``common/redaction.py``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

import anyio.to_thread
import sqlalchemy as sa
import structlog

from exec_watchdog.common.contract import (
    ACTIONS,
    CLAIM_RESULT,
    FAIL_ORPHAN,
    RELEASE_LEAKED_SLOT,
    SLOT_ACTIONS,
    TERMINATE_OVERDUE,
    UNDECIDED,
    Outcome,
)
from exec_watchdog.common.redaction import redact
from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access import inflight as inflight_markers
from exec_watchdog.platform_access.agent_client import AgentClient, AgentResult, TerminateOutcome
from exec_watchdog.platform_access.inflight import InflightStore
from exec_watchdog.platform_access.names import InvalidIdentifier, check_execution_id
from exec_watchdog.platform_access.slots import SlotStore
from exec_watchdog.platform_access.timestamps import utcnow
from exec_watchdog.remediator import action_claims, audit, claim, texts
from exec_watchdog.remediator.announce import Announcer
from exec_watchdog.remediator.breaker import Breaker
from exec_watchdog.remediator.deadlines import AgentBusy, AgentGate, ProgressMonitor
from exec_watchdog.remediator.evidence import UNRECORDED, Delivery, Evidence, evidence_for, timed
from exec_watchdog.remediator.isolation import alone, each, together
from exec_watchdog.remediator.metrics import RemediatorMetrics
from exec_watchdog.remediator.orphans import OrphanCheck
from exec_watchdog.remediator.payload import Alert
from exec_watchdog.remediator.silences import SilenceChecker, SilenceCheckFailed, covering
from exec_watchdog.remediator.slot_reclaim import SlotCheck

log = structlog.get_logger("exec_watchdog.remediator")


@dataclass(frozen=True, slots=True)
class Settings:
    replica: str
    min_orphan_age_seconds: float = 60.0
    dry_run: bool = False
    claim_ttl_seconds: float = 30.0
    agent_concurrency: int = 50
    agent_calls_per_agent: int = 4  # so one slow agent cannot take every call slot
    agent_wait_seconds: float = 10.0  # longest wait for a turn to call an agent
    action_claim_ttl_seconds: float = 60.0  # outlasts a terminate (deadline + grace) and the transition
    claim_defer_seconds: float = claim.CLAIM_DEFER_SECONDS
    inflight_max_age_seconds: float = inflight_markers.DEFAULT_MAX_AGE_SECONDS


@dataclass(slots=True)
class Verdict:
    alert: Alert
    evidence: Evidence = UNRECORDED  # the facts behind the decision, stored with its audit row
    outcome: Outcome = UNDECIDED
    reason: str = ""
    execution: db.Execution | None = None
    error: str = ""  # the failure text written to the row, or the claim's announcement reason
    claim: db.Claim | None = None  # set when a retained result is claimed instead of failing the run
    reserved: bool = False  # took breaker budget; given back unless it ends recovered
    slot_only: bool = False  # a slot remediation that releases the slot and changes no row
    slot_leak: bool = False  # slot_only for a missing or finished row: a recovery, announced
    terminate_first: bool = False  # a slot reclaim: terminate on the agent (best effort) before failing
    slot_age_seconds: float = 0.0  # a slot remediation: how long the slot was held

    def decide(self, outcome: Outcome, reason: str) -> None:
        self.outcome, self.reason = outcome, reason

    @property
    def undecided(self) -> bool:
        return self.outcome == UNDECIDED


@dataclass(slots=True)
class BatchResult:
    verdicts: list[Verdict] = field(default_factory=list)
    unfinished: bool = False  # recovered, but the slot release or announcement is still owed

    @property
    def retry(self) -> bool:
        """Alertmanager should deliver again: something transient stopped us."""
        return self.unfinished or any(v.outcome in ("retry", "breaker_open") for v in self.verdicts)


def metric_remediation(value: str) -> str:
    """A bounded label value: label text is untrusted, every distinct value would be a series."""
    return value if value in ACTIONS else ("none" if not value else "other")


class Remediator:
    def __init__(self, engine: sa.Engine, slots: SlotStore, agents: AgentClient, announcer: Announcer,
                 breaker: Breaker, silences: SilenceChecker | None, metrics: RemediatorMetrics,
                 settings: Settings, inflight: InflightStore | None = None) -> None:
        self.engine = engine
        self.slots = slots
        self.agents = agents
        self.announcer = announcer
        self.breaker = breaker
        self.silences = silences
        self.metrics = metrics
        self.settings = settings
        self.agent_gate = AgentGate(settings.agent_concurrency, settings.agent_calls_per_agent,
                                    settings.agent_wait_seconds)
        self.progress = ProgressMonitor()
        self.orphans = OrphanCheck(agents, self.agent_gate, inflight, settings.min_orphan_age_seconds,
                                   settings.claim_defer_seconds, settings.inflight_max_age_seconds)
        self.slot_check = SlotCheck(engine, slots, agents, self.agent_gate, inflight)

    async def handle(self, alerts: Iterable[Alert], delivery: Delivery | None = None) -> BatchResult:
        with self.progress.delivery():
            result = BatchResult([Verdict(a, evidence_for(a, delivery)) for a in alerts])
            actionable = [v for v in result.verdicts if self._screened(v)]
            if actionable:
                try:
                    result.unfinished = not await self._act(actionable)
                except sa.exc.DBAPIError as exc:
                    for v in actionable:
                        if v.undecided:
                            v.decide("retry", f"database unavailable: {type(exc).__name__}")
                except Exception as exc:  # a step for the whole batch (the row read): everyone's retry
                    log.error("batch_step_failed", error_type=type(exc).__name__, exc_info=exc)
                    for v in actionable:
                        if v.undecided:
                            v.decide("retry", f"remediation failed ({type(exc).__name__}): retried")
                finally:
                    self._refund(actionable)
            try:
                await self._record(result.verdicts)
            except Exception as exc:  # the actions stand; the audit row is owed: retry
                log.error("audit_write_failed", error_type=type(exc).__name__, error=str(exc)[:300])
                result.unfinished = True
            return result

    def _refund(self, verdicts: list[Verdict]) -> None:
        """The breaker counts changes made: a duplicate or a failed attempt gives its budget back."""
        for v in verdicts:
            if v.reserved:
                self.breaker.settle(v.alert.execution_id, changed=v.outcome == "recovered")

    # -- screening: what is ours to act on --------------------------------------------------------

    def _screened(self, v: Verdict) -> bool:
        with alone(v, "screening the alert"):
            return self._screen(v)
        return False

    def _screen(self, v: Verdict) -> bool:
        alert = v.alert
        self.metrics.alerts.labels(alert.status, metric_remediation(alert.remediation)).inc()
        if alert.status == "resolved":
            v.decide("ignored", "resolved notification: recorded, never acted on")
        elif alert.remediation not in ACTIONS:
            v.decide("ignored", f"no remediation for remediation label {alert.remediation!r}")
        else:
            try:
                self.agents.base_url(alert.agent)  # the template's rule: stricter when {agent} is in the host
                check_execution_id(alert.execution_id)
            except InvalidIdentifier as exc:
                v.decide("ignored", f"unsafe labels: {exc}")
        return v.undecided

    # -- acting -----------------------------------------------------------------------------------

    async def _act(self, verdicts: list[Verdict]) -> bool:
        """Verify and act; False when a recovery's slot release or announcement is still owed."""
        ids = sorted({v.alert.execution_id for v in verdicts})
        (rows, now), took = await timed(anyio.to_thread.run_sync(self._load, ids))
        seen: set[str] = set()
        for v in verdicts:
            with alone(v, "reading the row"):
                v.evidence.row_read(rows.get(v.alert.execution_id), now, took)
                if v.alert.remediation not in SLOT_ACTIONS:  # a slot's row may be missing or finished: slot_reclaim.py
                    self._verify_row(v, rows.get(v.alert.execution_id), now)
            if v.undecided and v.alert.execution_id in seen:
                v.decide("skipped", "duplicate of another alert in this notification")
            seen.add(v.alert.execution_id)
        await self._check_silences([v for v in verdicts if v.undecided])
        orphans = [v for v in verdicts if v.undecided and v.alert.remediation in (FAIL_ORPHAN, CLAIM_RESULT)]
        await self.orphans.verify(orphans, now)
        slot_verdicts = [v for v in verdicts if v.undecided and v.alert.remediation in SLOT_ACTIONS]
        with together(slot_verdicts, "verifying the slot"):
            await self.slot_check.verify(slot_verdicts, rows, now.timestamp())
        for v in verdicts:
            if v.undecided:
                self._gate(v)
        overdue = [v for v in verdicts if v.undecided and v.alert.remediation == TERMINATE_OVERDUE]
        await each(overdue, lambda v: self._terminate(v, now), "terminating on the agent")
        for v in verdicts:
            if v.undecided and v.slot_only and not v.slot_leak:
                with alone(v, "removing the slot"):
                    await anyio.to_thread.run_sync(self.slot_check.remove_quietly, v)
        await each([v for v in verdicts if v.undecided and v.slot_only], self._claim_release,
                   "claiming the slot release")
        await each([v for v in verdicts if v.undecided and v.terminate_first], self.slot_check.terminate,
                   "terminating the slot's run on the agent")
        # Trinity's slot texts are written as they are, without the agent's last error.
        await each([v for v in verdicts if v.undecided and v.claim is None and v.alert.remediation not in SLOT_ACTIONS],
                   self.orphans.prefix_last_error, "asking the agent's last error")
        ready = [v for v in verdicts if v.undecided]
        if ready:
            winners = await anyio.to_thread.run_sync(self._transition, ready)
            try:
                await self.finish(winners)
            except Exception:  # logged in finish(); the sweep finishes it later
                return False
        return True

    def _load(self, ids: list[str]) -> tuple[dict[str, db.Execution | db.BadRow], datetime]:
        """The rows, and the database's clock to age them with (never ours: it may be skewed)."""
        with self.engine.connect() as conn:
            return db.get_executions(conn, ids), db.database_now(conn)

    def _verify_row(self, v: Verdict, row: db.Execution | db.BadRow | None, now: datetime) -> None:
        alert = v.alert
        if row is None:
            return v.decide("skipped", "no such execution in the database")
        if isinstance(row, db.BadRow):
            return v.decide("skipped", f"unreadable row: {row}")
        v.execution = row
        runtime = row.runtime_seconds(now)
        if row.status != "running":
            return v.decide("skipped", f"completed meanwhile: status is {row.status!r}")
        if row.leased:
            return v.decide("skipped", "lease row: another reaper owns it")
        if row.agent_name != alert.agent:
            return v.decide("skipped", f"alert names agent {alert.agent!r}, the row says {row.agent_name!r}")
        if row.agent_deleted:
            return v.decide("skipped", "the agent is soft-deleted (agent_ownership.deleted_at): not ours")
        if alert.remediation == FAIL_ORPHAN and runtime < self.settings.min_orphan_age_seconds:
            return v.decide("skipped", f"too young to be an orphan: {runtime:.1f} s < "
                                       f"{self.settings.min_orphan_age_seconds:g} s")
        if alert.remediation == TERMINATE_OVERDUE and runtime <= row.timeout_seconds:
            return v.decide("skipped", f"not overdue: {runtime:.0f} s of {row.timeout_seconds} s")
        return None

    async def _check_silences(self, verdicts: list[Verdict]) -> None:
        if not verdicts or self.silences is None:
            return
        started = time.perf_counter()
        try:
            check, took = await timed(self.silences.check())
        except SilenceCheckFailed as exc:
            for v in verdicts:
                v.evidence.silence_check_failed(exc, time.perf_counter() - started)
                v.decide("retry", f"cannot check silences: {exc}")
            return
        for v in verdicts:
            with alone(v, "matching silences"):
                v.evidence.silence_check(check, took)
                imposed = covering(check.silences, v.alert.labels)
                if imposed is not None:
                    v.decide(*imposed)

    def _gate(self, v: Verdict) -> None:
        if self.settings.dry_run:
            v.decide("would_recover", f"dry run: would {v.alert.remediation.replace('_', ' ')}")
        elif not self.breaker.allow(v.alert.execution_id):
            self.metrics.breaker_open.set(1)
            v.decide("breaker_open", f"breaker open: more than {self.breaker.max_actions} remediations in "
                                     f"{self.breaker.window_seconds:g} s")
        else:
            v.reserved = True

    async def _terminate(self, v: Verdict, now: datetime) -> None:
        assert v.execution is not None
        holder = f"{self.settings.replica}:{uuid.uuid4().hex[:12]}"
        refused = await anyio.to_thread.run_sync(self._claim_action, v.alert.execution_id, holder)
        if refused is not None:
            return v.decide("lost_race", refused)
        answer, took = await timed(self._terminate_on_agent(v.alert.agent, v.alert.execution_id))
        v.evidence.terminate_answer(answer, took)
        self._judge_terminate(v, answer, now)
        if not v.error:  # no kill happened: the next attempt need not wait for the claim to expire
            await anyio.to_thread.run_sync(action_claims.release, self.engine, v.alert.execution_id, holder)
        return None

    async def _claim_release(self, v: Verdict) -> None:
        holder = f"{self.settings.replica}:{uuid.uuid4().hex[:12]}"
        refused = await anyio.to_thread.run_sync(self.slot_check.claim_release, v, holder,
                                                 self.settings.action_claim_ttl_seconds)
        if refused is not None:
            v.decide("lost_race", refused)

    def _claim_action(self, execution_id: str, holder: str) -> str | None:
        """Claim the execution before acting outside the database; None when held, else why not."""
        if not action_claims.take(self.engine, execution_id, holder, self.settings.action_claim_ttl_seconds):
            return "another replica or delivery is already terminating it"
        with self.engine.connect() as conn:
            row = db.get_executions(conn, [execution_id]).get(execution_id)
        if not isinstance(row, db.Execution) or row.status != "running":  # finished while we verified
            action_claims.release(self.engine, execution_id, holder)
            return "another writer changed the row first"
        return None

    async def _terminate_on_agent(self, agent: str, execution_id: str) -> AgentResult[TerminateOutcome]:
        try:
            async with self.agent_gate.turn(agent):
                return await self.agents.terminate(agent, execution_id)
        except AgentBusy as exc:
            return AgentResult("timeout", detail=str(exc))

    def _judge_terminate(self, v: Verdict, answer: AgentResult[TerminateOutcome], now: datetime) -> None:
        assert v.execution is not None
        if answer.kind == "not_found":
            v.decide("skipped", "agent does not know it: left for the orphan path")
        elif not answer.answered:
            v.decide("retry", f"terminate not confirmed ({answer.kind}): {answer.detail}")
        elif answer.unwrap().status == "already_finished":
            v.decide("skipped", "already finished on the agent: left for the orphan path")
        else:
            runtime = v.execution.runtime_seconds(now)
            v.error = texts.overdue_text(runtime, v.execution.timeout_seconds)

    def _transition(self, verdicts: list[Verdict]) -> list[audit.Recovery]:
        """All together in one transaction; if the database refuses that, each alert on its own, so
        one alert's failure (a held lock, a constraint) is that alert's retry, not everyone's."""
        if len(verdicts) > 1:
            try:
                return self._transition_together(verdicts)
            except Exception as exc:  # any type: a driver's encoding error is one row's, not the batch's
                log.warning("transition_batch_failed", error_type=type(exc).__name__, alerts=len(verdicts))
                for v in verdicts:  # rolled back: whatever the batch decided did not happen
                    v.outcome, v.reason = UNDECIDED, ""
        winners = []
        for index, v in enumerate(verdicts):
            try:
                winners += self._transition_together([v])
            except Exception as exc:
                if not isinstance(exc, sa.exc.DBAPIError):
                    log.error("transition_failed", execution_id=v.alert.execution_id[:200],
                              error_type=type(exc).__name__, exc_info=exc)
                v.outcome, v.reason = UNDECIDED, ""
                v.decide("retry", f"database refused the transition: {type(exc).__name__}")
                if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:  # the database is gone
                    for rest in verdicts[index + 1:]:
                        rest.decide("retry", f"database unavailable: {type(exc).__name__}")
                    break
        return winners

    def _transition_together(self, verdicts: list[Verdict]) -> list[audit.Recovery]:
        """One transaction: each guarded update, and the outbox row of each one we won."""
        winners = []
        with self.engine.begin() as conn:
            now = db.database_now(conn)
            for v in verdicts:
                if v.slot_only:  # owned through its action claim: no row changes, the release is the action
                    winners.append(self._slot_release(v, now))
                    continue
                assert v.execution is not None
                v.error = redact(v.error)  # agent text came in redacted; our own texts go out the same way
                if v.claim is not None and v.claim.error:
                    v.claim = replace(v.claim, error=redact(v.claim.error))
                started = time.perf_counter()
                won = (db.claim_execution(conn, v.execution, v.claim, now) if v.claim is not None
                       else db.fail_execution(conn, v.execution, v.error, now))
                if v.claim is not None:  # what the claim wrote: the agent's status and error, not our notice
                    v.evidence.guarded_update(won, v.claim.error or "", time.perf_counter() - started,
                                              status=v.claim.status, guard="Trinity's claim guard")
                else:
                    v.evidence.guarded_update(won, v.error, time.perf_counter() - started)
                killed = v.alert.remediation == TERMINATE_OVERDUE and bool(v.error)
                if won or killed:  # a kill whose exit report won the update is still ours
                    recovery = audit.Recovery(
                        execution_id=v.execution.id, agent_name=v.execution.agent_name,
                        action=CLAIM_RESULT if v.claim is not None else v.alert.remediation, reason=v.error,
                        fingerprint=v.alert.fingerprint,
                        runtime_seconds=v.execution.runtime_seconds(now), alert_started_at=v.alert.starts_at,
                        recovered_at=now)
                    winners.append(recovery)
                    v.decide("recovered", v.error if won else
                             f"{v.error}; the platform recorded the exit of our kill first")
                else:
                    v.decide("lost_race", "another writer changed the row first")
            # Same transaction as the updates: a won transition always has its outbox row.
            audit.open_recoveries(conn, winners, self.settings.replica, self.settings.claim_ttl_seconds)
        for r in winners:
            self.metrics.time_to_recovery.labels(r.action).observe(
                max(0.0, (r.recovered_at - r.alert_started_at).total_seconds()))
            self.metrics.recent_recoveries.add(r)  # Grafana's annotation, linking to the story
        return winners

    def _slot_release(self, v: Verdict, now: datetime) -> audit.Recovery:
        v.decide("recovered", v.error)
        return audit.Recovery(
            execution_id=v.alert.execution_id, agent_name=v.alert.agent, action=RELEASE_LEAKED_SLOT, reason=v.error,
            fingerprint=v.alert.fingerprint, runtime_seconds=v.slot_age_seconds,
            alert_started_at=v.alert.starts_at, recovered_at=now)

    # -- finishing: slot release and announcement, exactly once -----------------------------------

    async def finish(self, recoveries: list[audit.Recovery]) -> None:
        """Release the slots and announce, for recoveries this replica holds the claim of.

        On failure the claim is dropped so the next sweep (here or on another replica) retries.
        """
        if not recoveries:
            return
        try:
            await anyio.to_thread.run_sync(self._release_slots, recoveries)
            await self.announcer.announce(recoveries, utcnow())
            await anyio.to_thread.run_sync(self._mark_finished, [r.execution_id for r in recoveries])
        except Exception as exc:
            log.warning("finish_failed", error=str(exc), error_type=type(exc).__name__,
                        executions=[r.execution_id for r in recoveries][:20])
            await anyio.to_thread.run_sync(self._drop_claims, [r.execution_id for r in recoveries])
            raise

    def _release_slots(self, recoveries: list[audit.Recovery]) -> None:
        # Idempotent: after a crash the retry removes nothing that was already removed.
        self.slots.release_many([(r.agent_name, r.execution_id) for r in recoveries])

    def _mark_finished(self, ids: list[str]) -> None:
        with self.engine.begin() as conn:
            audit.mark_finished(conn, ids, utcnow(), self.settings.replica)

    def _drop_claims(self, ids: list[str]) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.update(audit.recoveries)
                         .where(audit.recoveries.c.execution_id.in_(ids),
                                audit.recoveries.c.claimed_by == self.settings.replica)
                         .values(claim_expires_at="0000"))  # sorts before every real timestamp: expired

    async def finish_unfinished(self) -> int:
        """Claim and finish recoveries a crash or an outage left half done. Returns how many."""
        claimed = await anyio.to_thread.run_sync(
            lambda: audit.claim_unfinished(self.engine, self.settings.replica, utcnow(),
                                           self.settings.claim_ttl_seconds))
        if claimed:
            log.info("finishing_unfinished", count=len(claimed))
            await self.finish(claimed)
        return len(claimed)

    async def _record(self, verdicts: list[Verdict]) -> None:
        items, now = [], utcnow()  # decided now: the time the evidence and the audit row carry
        for v in verdicts:
            a = v.alert
            self.metrics.remediations.labels(metric_remediation(a.remediation), v.outcome).inc()
            # Labels are untrusted and unbounded: the audit keeps a bounded prefix of each.
            items.append(audit.Decision(a.name[:200], a.status, a.fingerprint, a.remediation[:200], a.agent[:200],
                                        a.execution_id[:200], v.outcome, redact(v.reason)[:1000],
                                        v.evidence.finish(self.settings.replica, now)))
            if v.outcome not in ("ignored", "recovered"):  # a recovery's line is written when announced
                log.info("decision", agent=a.agent, execution_id=a.execution_id, action=a.remediation,
                         outcome=v.outcome, reason=v.reason, fingerprint=a.fingerprint)

        def write() -> None:
            with self.engine.begin() as conn:
                audit.record(conn, items, self.settings.replica, now)

        await anyio.to_thread.run_sync(write)
