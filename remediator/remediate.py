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

import asyncio
import threading
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
    FAIL_STALE_ACTIVITY,
    RELEASE_LEAKED_SLOT,
    ROW_ACTIONS,
    SLOT_ACTIONS,
    SWEEP_ACTIONS,
    TERMINATE_OVERDUE,
    UNDECIDED,
    Outcome,
)
from exec_watchdog.common.redaction import redact
from exec_watchdog.platform_access import activities, cleanup_rows
from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access import inflight as inflight_markers
from exec_watchdog.platform_access.agent_client import AgentClient, AgentResult, TerminateOutcome
from exec_watchdog.platform_access.inflight import InflightStore
from exec_watchdog.platform_access.names import InvalidIdentifier, check_execution_id
from exec_watchdog.platform_access.slots import SlotStore
from exec_watchdog.platform_access.timestamps import utcnow
from exec_watchdog.remediator import (
    action_claims,
    audit,
    claim,
    closing,
    detection,
    row_cleanup,
    shadow_decisions,
    shadow_store,
    shadow_verdicts,
    texts,
)
from exec_watchdog.remediator.announce import TURN_EVERY, Announcer
from exec_watchdog.remediator.breaker import Breaker
from exec_watchdog.remediator.deadlines import AgentBusy, AgentGate, ProgressMonitor
from exec_watchdog.remediator.evidence import UNRECORDED, Delivery, Evidence, evidence_for, timed
from exec_watchdog.remediator.fleet import FleetGuard
from exec_watchdog.remediator.isolation import alone, each, together
from exec_watchdog.remediator.lost_commit import LostCommit, read_back
from exec_watchdog.remediator.metrics import RemediatorMetrics
from exec_watchdog.remediator.orphans import OrphanCheck
from exec_watchdog.remediator.payload import Alert
from exec_watchdog.remediator.silences import SilenceChecker, SilenceCheckFailed, covering
from exec_watchdog.remediator.slot_reclaim import SlotCheck
from exec_watchdog.remediator.stale import SweepCheck, Windows

log = structlog.get_logger("exec_watchdog.remediator")
SHADOW_AND_DRY_RUN = ("--shadow and --dry-run do not combine: --shadow is already a dry run (it changes nothing) "
                      "that also keeps each first decision and compares it with the platform's cleanup; pass one")
CHANGED_FIRST = "another writer changed the row first"


@dataclass(frozen=True, slots=True)
class Settings:
    replica: str
    min_orphan_age_seconds: float = 60.0
    dry_run: bool = False
    claim_ttl_seconds: float = 30.0
    agent_concurrency: int = 50
    agent_calls_per_agent: int = 4  # so one slow agent cannot take every call slot
    agent_wait_seconds: float = 10.0  # longest wait for a turn to call an agent
    # The action claim's lease, renewed right before the terminate is sent: it must outlast the agent
    # call (--agent-terminate-timeout, 15 s) so a lapsed lease means no terminate is still on its way.
    action_claim_ttl_seconds: float = 20.0
    commit_readback_seconds: float = 10.0  # after a lost COMMIT reply: how long to try reading back what happened
    claim_defer_seconds: float = claim.CLAIM_DEFER_SECONDS
    inflight_max_age_seconds: float = inflight_markers.DEFAULT_MAX_AGE_SECONDS
    backlog_max_age_seconds: float = cleanup_rows.BACKLOG_MAX_AGE_SECONDS  # Trinity: 24 h
    activity_stale_seconds: float = activities.STALE_ACTIVITY_MINUTES * 60.0  # Trinity: 120 minutes
    sweep_windows: Windows = field(default_factory=Windows)  # Trinity's stale and no-session sweeps (stale.py)
    # Shadow mode: a dry run beside the platform's own cleanup, each subject's first decision kept for
    # the comparison (remediator/shadow_compare.py). Nothing is ever changed on the platform.
    shadow: bool = False
    shadow_comparison: shadow_verdicts.Settings = field(default_factory=shadow_verdicts.Settings)

    def __post_init__(self) -> None:
        if self.shadow and self.dry_run:
            raise ValueError(SHADOW_AND_DRY_RUN)


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
    queued_at: str | None = None  # expire_backlog: the queued_at verified, guarded on by the write
    activity: activities.Activity | None = None  # fail_stale_activity: the activity verified (no execution)
    retained_at: datetime | None = None  # when the agent kept the result a claim takes
    held: bool = False  # holds the action claim (remediator/action_claims.py) until the delivery ends
    killed: bool = False  # this attempt's own terminate was confirmed: its kill is ours even if the exit report wins
    note: str = ""  # appended to a recovered decision's reason

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


# Decided without the agent's last error: on the database alone, or with Trinity's slot texts as they are.
_NO_AGENT = (*ROW_ACTIONS, FAIL_STALE_ACTIVITY, *SLOT_ACTIONS, *SWEEP_ACTIONS)


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
        self._has_close_tables: bool | None = None
        self.claims = action_claims.Keeper(engine, settings.replica, settings.action_claim_ttl_seconds)
        self._unknown_commits: list[tuple[audit.Recovery, Alert]] = []  # lost COMMIT replies not read back yet
        self._unknown_lock = threading.Lock()  # appended to from a worker thread
        self.orphans = OrphanCheck(agents, self.agent_gate, inflight, settings.min_orphan_age_seconds,
                                   settings.claim_defer_seconds, settings.inflight_max_age_seconds)
        self.slot_check = SlotCheck(engine, slots, agents, self.agent_gate, inflight)
        fleet = FleetGuard(silences.urls, silences.http) if silences is not None else None
        self.sweeps = SweepCheck(agents, self.agent_gate, fleet, settings.sweep_windows)

    async def handle(self, alerts: Iterable[Alert], delivery: Delivery | None = None) -> BatchResult:
        with self.progress.delivery():
            result = BatchResult([Verdict(a, evidence_for(a, delivery)) for a in alerts])
            actionable = [v for v in result.verdicts if self._screened(v)]
            if actionable:
                await self.claims.settle_owed()
                await self.settle_unknown_commits()
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
                    for v in actionable:
                        if v.held:
                            await self.claims.settle(v.alert.execution_id,
                                                     final=v.outcome not in ("retry", "breaker_open", UNDECIDED))
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
        cleanup_ids = sorted({v.alert.execution_id for v in verdicts if v.alert.remediation in ROW_ACTIONS})
        cleanup = await anyio.to_thread.run_sync(self._load_cleanup, cleanup_ids, now) if cleanup_ids else {}
        activity_ids = sorted({v.alert.execution_id for v in verdicts if v.alert.remediation == FAIL_STALE_ACTIVITY})
        acts = await anyio.to_thread.run_sync(self._load_activities, activity_ids) if activity_ids else {}
        seen: set[str] = set()
        for v in verdicts:
            with alone(v, "reading the row"):
                v.evidence.row_read(rows.get(v.alert.execution_id), now, took)
                if v.alert.remediation == FAIL_STALE_ACTIVITY:
                    self._verify_activity(v, acts.get(v.alert.execution_id), now)
                elif v.alert.remediation in ROW_ACTIONS:
                    self._verify_cleanup_row(v, rows.get(v.alert.execution_id), cleanup.get(v.alert.execution_id))
                elif v.alert.remediation not in SLOT_ACTIONS:  # a slot's row may be gone or finished: slot_reclaim.py
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
        sweeps = [v for v in verdicts if v.undecided and v.alert.remediation in SWEEP_ACTIONS]
        with together(sweeps, "verifying the sweep"):
            await self.sweeps.verify(sweeps, now)
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
        # Trinity's slot, cleanup and sweep texts are written as they are, without the agent's last error.
        await each([v for v in verdicts if v.undecided and v.claim is None and v.alert.remediation not in _NO_AGENT],
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

    def _load_cleanup(self, ids: list[str], now: datetime) -> dict[str, cleanup_rows.CleanupRow | None]:
        with self.engine.connect() as conn:
            return {i: row_cleanup.read(conn, i, now) for i in ids}

    def _load_activities(self, ids: list[str]) -> dict[str, activities.Activity | None]:
        with self.engine.connect() as conn:
            return {i: activities.get(conn, i) for i in ids}

    def _verify_activity(self, v: Verdict, act: activities.Activity | None, now: datetime) -> None:
        """Trinity's 120-minute backstop: the activity must still be started, and old enough on the database's clock."""
        limit = self.settings.activity_stale_seconds
        if act is None:
            return v.decide("skipped", "no such activity in the database")
        if act.state != "started":
            return v.decide("skipped", f"closed meanwhile: activity_state is {act.state!r}")
        if act.agent_name != v.alert.agent:
            return v.decide("skipped", f"alert names agent {v.alert.agent!r}, the activity says {act.agent_name!r}")
        if act.started_at is None:
            return v.decide("skipped", "unreadable started_at: never aged, never failed")
        age = (now - act.started_at).total_seconds()
        if age <= limit:
            return v.decide("skipped", f"not stale: started {age:.0f} s ago of {limit:g} s")
        v.activity, v.error = act, texts.stale_activity_text(limit)
        return None

    def _verify_cleanup_row(self, v: Verdict, row: db.Execution | db.BadRow | None,
                            facts: cleanup_rows.CleanupRow | None) -> None:
        """Skipped and backlog rows: remediator/row_cleanup.py decides, no agent is asked."""
        if isinstance(row, db.BadRow):
            return v.decide("skipped", f"unreadable row: {row}")
        decision = row_cleanup.decide(v.alert.remediation, v.alert.agent, facts,
                                      self.settings.backlog_max_age_seconds)
        if not decision.act or row is None:
            return v.decide("skipped", decision.reason or "no such execution in the database")
        v.execution, v.queued_at, v.error = row, decision.queued_at, row_cleanup.TEXTS[v.alert.remediation]
        return None

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
        if row.agent_deleted and alert.remediation not in SWEEP_ACTIONS:
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
        if self.settings.dry_run or self.settings.shadow:
            mode = "shadow" if self.settings.shadow else "dry run"
            v.decide("would_recover", f"{mode}: would {shadow_decisions.subject_of(v)[2].replace('_', ' ')}")
        elif not self.breaker.allow(v.alert.execution_id):
            self.metrics.breaker_open.set(1)
            v.decide("breaker_open", f"breaker open: more than {self.breaker.max_actions} remediations in "
                                     f"{self.breaker.window_seconds:g} s")
        else:
            v.reserved = True

    async def _terminate(self, v: Verdict, now: datetime) -> None:
        execution_id = v.alert.execution_id
        busy = self.claims.enter(execution_id)
        if busy == "retry":
            return v.decide("retry", "this replica is releasing the action claim an outage left behind")
        if busy == "lost_race":
            return v.decide("lost_race", "another delivery on this replica is already terminating it")
        v.held = True  # in this process from here on; in the database once take() answers
        try:
            held, refused = await anyio.to_thread.run_sync(self._claim_action, execution_id)
            if held is None:
                v.held = refused == CHANGED_FIRST  # ours, to drop
                if not v.held:  # held elsewhere: retried until its holder finishes or its lease lapses
                    self.claims.leave(execution_id)
                return v.decide("lost_race" if v.held else "retry", refused)
            answer, took = await timed(self._terminate_on_agent(v.alert.agent, execution_id))
        except sa.exc.DBAPIError as exc:  # this alert's retry; the claim (if taken) is released later
            return v.decide("retry", f"database unavailable: {type(exc).__name__}")
        if answer is None:
            return v.decide("lost_race", "the claim's lease lapsed before the terminate was sent; "
                                         "another replica took it over")
        v.evidence.terminate_answer(answer, took)
        self._judge_terminate(v, answer, now, held.predecessor_sent)
        return None

    async def _claim_release(self, v: Verdict) -> None:
        holder = f"{self.settings.replica}:{uuid.uuid4().hex[:12]}"
        refused = await anyio.to_thread.run_sync(self.slot_check.claim_release, v, holder,
                                                 self.settings.action_claim_ttl_seconds)
        if refused is not None:
            v.decide("lost_race", refused)

    def _claim_action(self, execution_id: str) -> tuple[action_claims.Held | None, str]:
        """Claim the execution before acting outside the database: the claim, or why not."""
        held = self.claims.take(execution_id)
        if held is None:
            return None, "another replica holds the action claim: retried until it finishes or its lease lapses"
        with self.engine.connect() as conn:
            row = db.get_executions(conn, [execution_id]).get(execution_id)
        if not isinstance(row, db.Execution) or row.status != "running":  # finished while we verified
            return None, CHANGED_FIRST
        return held, ""

    async def _terminate_on_agent(self, agent: str, execution_id: str) -> AgentResult[TerminateOutcome] | None:
        """Renew the claim's lease, then terminate; None when the claim is no longer ours."""
        try:
            async with self.agent_gate.turn(agent):
                if not await anyio.to_thread.run_sync(self.claims.confirm, execution_id):
                    return None
                return await self.agents.terminate(agent, execution_id)
        except AgentBusy as exc:
            return AgentResult("timeout", detail=str(exc))

    def _judge_terminate(self, v: Verdict, answer: AgentResult[TerminateOutcome], now: datetime,
                         predecessor_sent: bool = False) -> None:
        assert v.execution is not None
        gone = answer.kind == "not_found" or (answer.answered and answer.unwrap().status == "already_finished")
        if gone and predecessor_sent:  # an earlier attempt's terminate, whose delivery then failed
            v.error = texts.overdue_text(v.execution.runtime_seconds(now), v.execution.timeout_seconds)
            v.note = (f"the agent answered {answer.kind if answer.kind == 'not_found' else 'already_finished'}: "
                      "terminated by an earlier attempt whose delivery failed")
        elif answer.kind == "not_found":
            v.decide("skipped", "agent does not know it: left for the orphan path")
        elif not answer.answered:
            v.decide("retry", f"terminate not confirmed ({answer.kind}): {answer.detail}")
        elif answer.unwrap().status == "already_finished":
            v.decide("skipped", "already finished on the agent: left for the orphan path")
        else:
            runtime = v.execution.runtime_seconds(now)
            v.error = texts.overdue_text(runtime, v.execution.timeout_seconds)
            v.killed = True

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
        """One transaction: each guarded update, and the outbox row of each one we won.

        A failure before COMMIT rolled everything back and is raised. A failure of the COMMIT itself
        (the connection lost while it was under way) leaves it unknown whether it happened: the
        outcome is read back (:meth:`_after_lost_commit`) and recorded as it is.
        """
        try:
            winners = self._transition_once(verdicts)
        except LostCommit as lost:
            winners = self._after_lost_commit(verdicts, lost)
        for r in winners:
            self.metrics.time_to_recovery.labels(r.action).observe(
                max(0.0, (r.recovered_at - r.alert_started_at).total_seconds()))
            self.metrics.recent_recoveries.add(r)  # Grafana's annotation, linking to the story
            after = detection.detected_after(r.detected_at, r.recovered_at)
            if after is not None:
                self.metrics.detected_after.labels(r.action).observe(after)
        return winners

    def _transition_once(self, verdicts: list[Verdict]) -> list[audit.Recovery]:
        winners = []
        closes: list[tuple[Verdict, str]] = []  # won: their activity close and event follow the updates
        with self.engine.connect() as conn:
            transaction = conn.begin()  # an error before the commit: closing the connection rolls back
            now = db.database_now(conn)
            for v in verdicts:
                if v.slot_only:  # owned through its action claim: no row changes, the release is the action
                    winners.append(self._slot_release(v, now))
                    continue
                v.error = redact(v.error)  # agent text came in redacted; our own texts go out the same way
                if v.claim is not None and v.claim.error:
                    v.claim = replace(v.claim, error=redact(v.claim.error))
                started = time.perf_counter()
                if v.activity is not None:
                    won = activities.fail_stale(conn, v.activity.id, v.error, now, self.settings.activity_stale_seconds)
                    v.evidence.guarded_update(won, v.error, time.perf_counter() - started,
                                              guard="activity_state = 'started'")
                    self._settle(v, won, v.activity.id, v.activity.agent_name,
                                 (now - v.activity.started_at).total_seconds() if v.activity.started_at else 0.0,
                                 now, winners)
                    continue
                assert v.execution is not None
                if v.alert.remediation in ROW_ACTIONS:
                    won = row_cleanup.transition(conn, v.alert.remediation, v.execution.id, v.queued_at, now)
                else:
                    won = (db.claim_execution(conn, v.execution, v.claim, now) if v.claim is not None
                           else db.fail_execution(conn, v.execution, v.error, now))
                if v.claim is not None:  # what the claim wrote: the agent's status and error, not our notice
                    v.evidence.guarded_update(won, v.claim.error or "", time.perf_counter() - started,
                                              status=v.claim.status, guard="Trinity's claim guard")
                else:
                    v.evidence.guarded_update(won, v.error, time.perf_counter() - started)
                if won and self._closes_supported(conn):  # the run's activity and event: same transaction
                    closes.append((v, v.execution.id))
                # A kill of ours whose exit report won the update is still ours, unless another
                # attempt already recovered this run (it took our lapsed claim over).
                killed = v.killed and not won and not audit.recovered_since(conn, v.execution.id,
                                                                           v.execution.started_at)
                if won or killed:
                    recovery = audit.Recovery(
                        execution_id=v.execution.id, agent_name=v.execution.agent_name,
                        action=CLAIM_RESULT if v.claim is not None else v.alert.remediation, reason=v.error,
                        fingerprint=v.alert.fingerprint,
                        runtime_seconds=v.execution.runtime_seconds(now), alert_started_at=v.alert.starts_at,
                        recovered_at=now, detected_at=detection.lost_at(
                            v.alert.remediation, annotations=v.alert.annotations, started_at=v.execution.started_at,
                            timeout_seconds=v.execution.timeout_seconds, retained_at=v.retained_at))
                    winners.append(recovery)
                    v.decide("recovered", (v.error if won else
                                           f"{v.error}; the platform recorded the exit of our kill first")
                             + (f"; {v.note}" if v.note else ""))
                else:
                    v.decide("lost_race", "another writer changed the row first")
            # Read once for every win, written row by row: closing.after_won_many.
            closed = closing.after_won_many(conn, [(v.alert.remediation, run) for v, run in closes], now)
            for v, run in closes:
                v.evidence.platform_closed(closed[run].activities, closed[run].event_id)
            # Same transaction as the updates: a won transition always has its outbox row.
            audit.open_recoveries(conn, winners, self.settings.replica, self.settings.claim_ttl_seconds)
            try:
                transaction.commit()
            except sa.exc.DBAPIError as exc:
                raise LostCommit(winners, exc) from exc
        return winners

    def _after_lost_commit(self, verdicts: list[Verdict], lost: LostCommit) -> list[audit.Recovery]:
        """Record what a commit whose reply was lost did (``remediator/lost_commit.py``): committed,
        the decisions stand and the recoveries are finished on the spot; rolled back, the original
        error is raised (the alerts are retried); no answer in time, ``retry``, and
        :meth:`settle_unknown_commits` reads it back at the next delivery or sweep."""
        if not lost.winners:  # it changed nothing either way: every decision stands
            return []
        found = read_back(self.engine, lost.winners, self.settings.commit_readback_seconds)
        if found is None:  # read back again by each later delivery and sweep (settle_unknown_commits)
            log.error("commit_outcome_unknown", executions=[r.execution_id for r in lost.winners][:20])
            alerts = {v.alert.execution_id: v.alert for v in verdicts}
            with self._unknown_lock:
                self._unknown_commits.extend((r, alerts[r.execution_id]) for r in lost.winners)
            for v in verdicts:
                if v.outcome == "recovered":
                    v.decide("retry", "commit outcome unknown: the connection was lost during COMMIT "
                                      "and the database did not answer the read-back")
            return []
        if not found.committed:
            raise lost.error
        log.warning("commit_reply_lost", committed=len(lost.winners), error_type=type(lost.error).__name__)
        for v in verdicts:
            if v.outcome == "recovered":
                wrote = (v.claim.error or "") if v.claim is not None else v.error
                v.decide("recovered", f"{v.reason}; {found.describe(v.alert.execution_id, wrote)}")
        return lost.winners

    def _slot_release(self, v: Verdict, now: datetime) -> audit.Recovery:
        v.decide("recovered", v.error)
        return audit.Recovery(
            execution_id=v.alert.execution_id, agent_name=v.alert.agent, action=RELEASE_LEAKED_SLOT, reason=v.error,
            fingerprint=v.alert.fingerprint, runtime_seconds=v.slot_age_seconds,
            alert_started_at=v.alert.starts_at, recovered_at=now)

    def _settle(self, v: Verdict, won: bool, subject_id: str, agent: str, runtime: float, now: datetime,
                winners: list[audit.Recovery]) -> None:
        """A transition without a run behind it (an activity): recovered or lost, nothing to close."""
        if won:
            winners.append(audit.Recovery(
                execution_id=subject_id, agent_name=agent, action=v.alert.remediation, reason=v.error,
                fingerprint=v.alert.fingerprint, runtime_seconds=runtime, alert_started_at=v.alert.starts_at,
                recovered_at=now))
            v.decide("recovered", v.error)
        else:
            v.decide("lost_race", "another writer changed the activity first")

    def _closes_supported(self, conn: sa.Connection) -> bool:
        """Whether the database has Trinity's activity and event tables (a database an older
        ``db init`` made has not: its transitions then close nothing, and the log says so once)."""
        if self._has_close_tables is None:
            self._has_close_tables = closing.tables_present(conn)
            if not self._has_close_tables:
                log.warning("activity_tables_missing", detail="agent_activities / agent_event_subscriptions / "
                            "agent_events absent: recoveries close no activity and write no event")
        return self._has_close_tables

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

    async def settle_unknown_commits(self) -> None:
        """Read back the commits whose outcome an outage hid: those committed are recorded as
        ``recovered`` and finished now (this replica holds their outbox claim); the others rolled
        back and are forgotten (their alerts were answered retry)."""
        with self._unknown_lock:  # taken out while being read back: one caller settles each
            pending, self._unknown_commits = self._unknown_commits, []
        if not pending:
            return
        found = await anyio.to_thread.run_sync(read_back, self.engine, [r for r, _ in pending], 0.0)
        if found is None:
            with self._unknown_lock:
                self._unknown_commits[:0] = pending
            return
        committed = [(r, a) for r, a in pending if r.execution_id in found.committed_ids]
        if not committed:
            return
        log.warning("commit_reply_lost_read_back_later", committed=len(committed))
        verdicts = []
        for recovery, alert in committed:
            v = Verdict(alert, outcome="recovered")
            v.reason = f"{recovery.reason}; {found.describe(recovery.execution_id, recovery.reason)} (read back later)"
            verdicts.append(v)
        try:
            await self._record(verdicts)
            await self.finish([r for r, _ in committed])
        except Exception as exc:  # the outbox rows stay open: the sweep finishes them
            log.warning("unknown_commit_settle_failed", error_type=type(exc).__name__)

    async def finish_unfinished(self) -> int:
        """Claim and finish recoveries a crash or an outage left half done. Returns how many.

        Never in shadow mode: a release or an announcement owed by an earlier live run waits for it."""
        if self.settings.shadow:
            return 0
        await self.claims.settle_owed()
        await self.settle_unknown_commits()
        claimed = await anyio.to_thread.run_sync(
            lambda: audit.claim_unfinished(self.engine, self.settings.replica, utcnow(),
                                           self.settings.claim_ttl_seconds))
        if claimed:
            log.info("finishing_unfinished", count=len(claimed))
            await self.finish(claimed)
        return len(claimed)

    async def _record(self, verdicts: list[Verdict]) -> None:
        items, now = [], utcnow()  # decided now: the time the evidence and the audit row carry
        shadowed = []  # shadow mode: each subject's first decision, for the comparison
        for index, v in enumerate(verdicts):
            if index % TURN_EVERY == TURN_EVERY - 1:
                await asyncio.sleep(0)  # thousands of decisions: /healthz and other deliveries get turns
            a = v.alert
            self.metrics.remediations.labels(metric_remediation(a.remediation), v.outcome).inc()
            # Labels are untrusted and unbounded: the audit keeps a bounded prefix of each.
            items.append(audit.Decision(a.name[:200], a.status, a.fingerprint, a.remediation[:200], a.agent[:200],
                                        a.execution_id[:200], v.outcome, redact(v.reason)[:1000],
                                        v.evidence.finish(self.settings.replica, now)))
            if self.settings.shadow and v.outcome == "would_recover":
                shadowed.append(shadow_decisions.decision(v, items[-1].evidence, now, self.settings.shadow_comparison))
            if v.outcome not in ("ignored", "recovered"):  # a recovery's line is written when announced
                log.info("decision", agent=a.agent, execution_id=a.execution_id, action=a.remediation,
                         outcome=v.outcome, reason=v.reason, fingerprint=a.fingerprint)

        def write() -> None:
            with self.engine.begin() as conn:
                audit.record(conn, items, self.settings.replica, now)
                shadow_store.record_decisions(conn, shadowed, self.settings.replica)

        await anyio.to_thread.run_sync(write)
