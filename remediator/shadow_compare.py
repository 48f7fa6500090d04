"""Shadow mode's comparison: every ``interval_seconds``, see what the platform's cleanup wrote, and
give each subject either side acted on its one verdict (rules: ``remediator/shadow_verdicts.py``).

One pass, on the database's clock:

1. **Their writes.** Rows whose ``completed_at`` is past the cursor (the last pass, less an overlap)
   and that carry a cleanup text or the claim notice; the rows of our open decisions, read by id
   (a skipped row's ``completed_at`` is its start, so no cursor finds it); skipped rows seen
   unfinished in an earlier pass (kept in memory: after a restart, a skipped row finalized while we
   were down is found only if we had decided on it); activities failed by the 120-minute backstop;
   and for our open slot decisions, the slot gone from Redis. Each is kept once, as first seen. A
   row with a recovery of ours in ``watchdog_recoveries`` (left by an earlier live run) is ours,
   never theirs.
2. **Late decisions of ours.** When they wrote first, our alert may still reach us: its
   re-verification then finds the row ended (``skipped``). Such an audit row, made after their
   write and within our grace, counts as our decision at that time (marked ``late``: the lead
   time is negative).
3. **Verdicts.** Each open subject is judged; a final judgement is inserted once (another replica
   may have given it) and counted in ``exec_watchdog_shadow_verdicts_total`` and, when both acted,
   ``exec_watchdog_shadow_lead_seconds``.
4. **Follow-up**, for ``follow_seconds``: a run they failed that later reports success gets
   ``later_status``; an ``ours_only`` subject they act on after all gets ``their_late_action``.

Counters restart from the table: at start each replica re-counts the verdicts it gave, so the
sum over replicas equals the table.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import anyio.to_thread
import sqlalchemy as sa
import structlog

from exec_watchdog.common.contract import ACTIONS, FINALIZE_SKIPPED
from exec_watchdog.common.redaction import redact
from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.run_history import CLAIM_NOTICE_PREFIX
from exec_watchdog.platform_access.schema import agent_activities, schedule_executions
from exec_watchdog.platform_access.slots import SlotStore
from exec_watchdog.platform_access.timestamps import format_utc, parse_utc_or_none
from exec_watchdog.remediator import audit, shadow_store
from exec_watchdog.remediator.metrics import RemediatorMetrics
from exec_watchdog.remediator.shadow_store import Open, Write
from exec_watchdog.remediator.shadow_verdicts import Settings, judge, their_activity_action, their_row_action

log = structlog.get_logger("exec_watchdog.remediator")
MAX_SKIPPED_WATCHED = 10_000
_t = schedule_executions.c
_a = agent_activities.c
_CLAIMED = _t.response.like(CLAIM_NOTICE_PREFIX + "%")
_ROW = (_t.id, _t.agent_name, _t.status, _t.error, _t.completed_at, _CLAIMED.label("claimed"))


class Comparison:
    def __init__(self, engine: sa.Engine, slots: SlotStore, metrics: RemediatorMetrics, replica: str,
                 settings: Settings) -> None:
        self.engine = engine
        self.slots = slots
        self.metrics = metrics
        self.replica = replica
        self.settings = settings
        self._cursor: datetime | None = None
        self._skipped: set[tuple[str, str]] = set()  # (id, agent) of skipped rows not finalized when last seen

    def restore(self) -> None:
        """Count again the verdicts this replica gave before a restart."""
        with self.engine.connect() as conn:
            for (verdict, action), n in shadow_store.counts(conn, replica=self.replica).items():
                self.metrics.shadow_verdicts.labels(verdict, action).inc(n)
            for action, lead in shadow_store.leads(conn, self.replica):
                self.metrics.shadow_lead.labels(action).observe(lead)

    async def run(self) -> None:
        """Compare every interval until cancelled; a failed pass is logged and tried again."""
        await anyio.to_thread.run_sync(self.restore)
        while True:
            try:
                await anyio.to_thread.run_sync(self.compare)
            except Exception as exc:  # a database or Redis outage: the next pass catches up
                log.warning("shadow_comparison_failed", error_type=type(exc).__name__, error=str(exc)[:300])
            await asyncio.sleep(self.settings.interval_seconds)

    def compare(self) -> list[tuple[Open, str]]:
        """One pass; returns the subjects judged in it, with their verdict."""
        with self.engine.connect() as conn:
            now = db.database_now(conn)
        overlap = timedelta(seconds=2 * self.settings.interval_seconds + 120)
        if self._cursor is None:  # at start: everything that can still be judged
            s = self.settings
            self._cursor = now - timedelta(seconds=s.their_cycle_seconds + s.their_margin_seconds
                                           + s.our_grace_seconds) - overlap
        with self.engine.begin() as conn:
            shadow_store.record_writes(conn, self._their_writes(conn, now))
        with self.engine.begin() as conn:
            shadow_store.record_decisions(conn, self._late_decisions(conn), self.replica)
        judged = self._judge(now)
        self._follow(now)
        self._cursor = now - overlap
        return judged

    # -- 1. their writes -------------------------------------------------------------------------

    def _their_writes(self, conn: sa.Connection, now: datetime) -> list[Write]:
        assert self._cursor is not None
        cursor = format_utc(self._cursor)
        open_ours = [(row.subject_kind, row.subject_id, row.agent_name, row.action) for row in conn.execute(
            sa.select(shadow_store.decisions).where(shadow_store.decisions.c.judged == 0))]
        rows = {r.id: r for r in conn.execute(sa.select(*_ROW).where(
            _t.completed_at >= cursor, sa.or_(_t.status == "failed", _CLAIMED)))}
        ids = [i for kind, i, _, _ in open_ours if kind == "execution"] + [i for i, _ in self._skipped]
        for chunk in _chunks(ids):
            rows.update({r.id: r for r in conn.execute(sa.select(*_ROW).where(_t.id.in_(chunk)))})
        skipped_now = {(r.id, str(r.agent_name or "")) for r in conn.execute(
            sa.select(_t.id, _t.agent_name).where(_t.status == "skipped", _t.completed_at.is_(None))
            .limit(MAX_SKIPPED_WATCHED))}
        self._skipped = skipped_now
        found: list[Write] = []
        ours = _recovered_by_us(conn, list(rows))
        for r in rows.values():
            action = their_row_action(str(r.status), r.error, bool(r.claimed))
            if action is None or r.id in ours:
                continue
            written = now if action == FINALIZE_SKIPPED else _stamp(r.completed_at, now)
            found.append(Write("execution", r.id, str(r.agent_name or ""), action, str(r.status),
                               redact(r.error) if r.error else None, written, now))
        found += self._their_activity_writes(conn, cursor, [i for kind, i, _, _ in open_ours if kind == "activity"],
                                             now)
        for kind, subject_id, agent, action in open_ours:
            if kind == "slot":
                execution_id = subject_id.split("/", 1)[-1]
                if self.slots.entry(agent, execution_id) is None:  # their release, seen now
                    found.append(Write("slot", subject_id, agent, action, "released", None, now, now))
        return self._unseen(conn, found)

    def _their_activity_writes(self, conn: sa.Connection, cursor: str, ids: list[str], now: datetime) -> list[Write]:
        if agent_activities.name not in sa.inspect(conn).get_table_names():
            return []
        columns = (_a.id, _a.agent_name, _a.activity_state, _a.error, _a.completed_at)
        rows = {r.id: r for r in conn.execute(sa.select(*columns).where(
            _a.completed_at >= cursor, _a.activity_state == "failed",
            _a.error.like("Marked as failed by cleanup: exceeded %-minute timeout")))}
        for chunk in _chunks(ids):
            rows.update({r.id: r for r in conn.execute(sa.select(*columns).where(_a.id.in_(chunk)))})
        ours = _recovered_by_us(conn, list(rows))
        return [Write("activity", r.id, str(r.agent_name or ""), action, "failed", r.error,
                      _stamp(r.completed_at, now), now)
                for r in rows.values()
                if (action := their_activity_action(str(r.activity_state), r.error)) is not None and r.id not in ours]

    @staticmethod
    def _unseen(conn: sa.Connection, writes: list[Write]) -> list[Write]:
        t = shadow_store.theirs.c
        seen: set[tuple[str, str]] = set()
        for chunk in _chunks([w.subject_id for w in writes]):
            seen |= {(k, i) for k, i in conn.execute(sa.select(t.subject_kind, t.subject_id)
                                                      .where(t.subject_id.in_(chunk)))}
        return [w for w in writes if (w.kind, w.subject_id) not in seen]

    # -- 2. late decisions of ours ---------------------------------------------------------------

    def _late_decisions(self, conn: sa.Connection) -> list[shadow_store.Decision]:
        """Audit rows of alerts that reached us after their write (re-verification: ended meanwhile)."""
        t, d = shadow_store.theirs.c, audit.decisions.c
        lonely = conn.execute(sa.select(t.subject_kind, t.subject_id, t.agent_name, t.written_at, t.observed_at)
                              .where(t.judged == 0, ~sa.exists().where(
                                  shadow_store.decisions.c.subject_kind == t.subject_kind,
                                  shadow_store.decisions.c.subject_id == t.subject_id))).all()
        found = []
        for kind, subject_id, agent, written_at, observed_at in lonely:
            written, observed = parse_utc_or_none(written_at), parse_utc_or_none(observed_at)
            if written is None or observed is None:
                continue
            execution_id = subject_id.split("/", 1)[-1] if kind == "slot" else subject_id
            until = observed + timedelta(seconds=self.settings.our_grace_seconds)
            row = conn.execute(sa.select(d.decided_at, d.remediation, d.fingerprint, d.reason).where(
                d.execution_id == execution_id, d.outcome == "skipped", d.remediation.in_(ACTIONS),
                d.decided_at >= format_utc(written - timedelta(seconds=1)), d.decided_at <= format_utc(until))
                .order_by(d.decided_at).limit(1)).first()
            decided = parse_utc_or_none(row.decided_at) if row is not None else None
            if row is None or decided is None:
                continue
            found.append(shadow_store.Decision(
                kind, subject_id, agent, row.remediation, row.remediation, decided, decided, row.fingerprint,
                f"late: our alert arrived after their write; re-verification said: {row.reason}", None, late=True))
        return found

    # -- 3. verdicts -----------------------------------------------------------------------------

    def _judge(self, now: datetime) -> list[tuple[Open, str]]:
        with self.engine.connect() as conn:
            subjects = shadow_store.open_subjects(conn)
            v = shadow_store.verdicts.c
            given: dict[tuple[str, str], str] = {}
            for chunk in _chunks([i for _, i in subjects]):
                given.update({(k, i): verdict for k, i, verdict in conn.execute(
                    sa.select(v.subject_kind, v.subject_id, v.verdict).where(v.subject_id.in_(chunk)))})
        judged: list[tuple[Open, str]] = []
        for key, subject in subjects.items():
            with self.engine.begin() as conn:
                if key in given:  # judged before: a write of theirs after our lone decision is noted
                    if given[key] == "ours_only" and subject.theirs is not None:
                        shadow_store.note_their_late_write(conn, *key, subject.theirs.action,
                                                           subject.theirs.written_at)
                    shadow_store.mark_judged(conn, *key)
                    continue
                judgement = judge(subject.ours, subject.theirs, now, self.settings)
                if judgement is None:
                    continue
                won = shadow_store.record_verdict(conn, subject, judgement, subject.ours, now, self.replica)
            if won:
                self.metrics.shadow_verdicts.labels(judgement.verdict, judgement.action).inc()
                if judgement.lead_seconds is not None:
                    self.metrics.shadow_lead.labels(judgement.action).observe(judgement.lead_seconds)
                log.info("shadow_verdict", subject=f"{subject.kind}:{subject.subject_id}", verdict=judgement.verdict,
                         action=judgement.action, lead_seconds=judgement.lead_seconds, why=judgement.why)
                judged.append((subject, judgement.verdict))
        return judged

    # -- 4. follow-up ----------------------------------------------------------------------------

    def _follow(self, now: datetime) -> None:
        since = now - timedelta(seconds=self.settings.follow_seconds)
        with self.engine.begin() as conn:
            for chunk in _chunks(shadow_store.followed(conn, since)):
                for execution_id, status in conn.execute(sa.select(_t.id, _t.status).where(_t.id.in_(chunk))):
                    if status != "failed":  # Trinity let a late report overwrite their failure
                        shadow_store.note_later_status(conn, execution_id, str(status), now)


def _recovered_by_us(conn: sa.Connection, ids: list[str]) -> set[str]:
    """Ids with a recovery of ours (an earlier live run): their texts are ours, not the platform's."""
    found: set[str] = set()
    for chunk in _chunks(ids):
        found |= {r[0] for r in conn.execute(sa.select(audit.recoveries.c.execution_id)
                                             .where(audit.recoveries.c.execution_id.in_(chunk)))}
    return found


def _stamp(value: object, default: datetime) -> datetime:
    return parse_utc_or_none(value) or default


def _chunks(ids: list[str], size: int = 500) -> list[list[str]]:
    return [ids[i:i + size] for i in range(0, len(ids), size)]
