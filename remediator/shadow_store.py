"""Shadow mode's own tables: our first decision per subject, their writes as first seen, the verdicts.

All three are the remediator's (created with its audit tables); nothing here touches the platform's.

- ``watchdog_shadow_decisions``: one row per subject, the FIRST decision a shadow remediator took
  on it (later deliveries of the same alert add audit rows, never a second decision here);
- ``watchdog_shadow_theirs``: the platform cleanup's write on a subject, as the comparison first saw
  it (a later success may overwrite the row: this keeps what they wrote);
- ``watchdog_shadow_verdicts``: one verdict per subject (``remediator/shadow_verdicts.py``), given
  once by whichever replica got there first, with both sides' facts; ``later_status`` notes a run
  that reported success after their failure.

Every insert is "insert if absent" on the subject's key, so replicas and restarts never double one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from exec_watchdog.platform_access.timestamps import format_utc, parse_utc_or_none
from exec_watchdog.remediator.audit import audit_metadata
from exec_watchdog.remediator.shadow_verdicts import Judgement, Ours, Theirs

MAX_TEXT = 2_000  # Trinity's cap on an error text



def _key() -> tuple[sa.Column[str], sa.Column[str]]:
    """Each table's key: the subject's kind (execution, activity, slot) and its id."""
    return sa.Column("subject_kind", sa.Text, primary_key=True), sa.Column("subject_id", sa.Text, primary_key=True)


decisions = sa.Table(
    "watchdog_shadow_decisions", audit_metadata, *_key(),
    sa.Column("agent_name", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),  # what we would have done (a claim, not the orphan label)
    sa.Column("remediation", sa.Text, nullable=False),  # what the alert asked for
    sa.Column("decided_at", sa.Text, nullable=False),
    sa.Column("due_at", sa.Text, nullable=False),  # the end of their window
    sa.Column("replica", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("evidence", sa.Text),
    # 1: an alert of ours reached us only after their write (read from the audit trail, not re-verified)
    sa.Column("late", sa.Integer, nullable=False, server_default="0"),
    sa.Column("judged", sa.Integer, nullable=False, server_default="0"),
    sa.Index("idx_watchdog_shadow_decisions_open", "judged"),
)

theirs = sa.Table(
    "watchdog_shadow_theirs", audit_metadata, *_key(),
    sa.Column("agent_name", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("written_at", sa.Text, nullable=False),
    sa.Column("observed_at", sa.Text, nullable=False),
    sa.Column("judged", sa.Integer, nullable=False, server_default="0"),
    sa.Index("idx_watchdog_shadow_theirs_open", "judged"),
)

verdicts = sa.Table(
    "watchdog_shadow_verdicts", audit_metadata, *_key(),
    sa.Column("agent_name", sa.Text, nullable=False),
    sa.Column("verdict", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("our_action", sa.Text),
    sa.Column("our_decided_at", sa.Text),
    sa.Column("our_late", sa.Integer, nullable=False, server_default="0"),
    sa.Column("their_action", sa.Text),
    sa.Column("their_status", sa.Text),
    sa.Column("their_error", sa.Text),
    sa.Column("their_written_at", sa.Text),
    sa.Column("lead_seconds", sa.Float),
    sa.Column("why", sa.Text, nullable=False),
    sa.Column("judged_at", sa.Text, nullable=False),
    sa.Column("replica", sa.Text, nullable=False),
    sa.Column("later_status", sa.Text),  # the row's status when it changed after their write (a late success)
    sa.Column("later_seen_at", sa.Text),
    sa.Column("their_late_action", sa.Text),  # ours_only: they acted after all, past their window
    sa.Column("their_late_written_at", sa.Text),
    sa.Index("idx_watchdog_shadow_verdicts_judged", "judged_at"),
)

TABLES = (decisions.name, theirs.name, verdicts.name)


@dataclass(frozen=True, slots=True)
class Decision:
    kind: str
    subject_id: str
    agent: str
    action: str
    remediation: str
    decided_at: datetime
    due_at: datetime
    fingerprint: str
    reason: str
    evidence: str | None
    late: bool = False


@dataclass(frozen=True, slots=True)
class Write:
    """Their write as first seen."""

    kind: str
    subject_id: str
    agent: str
    action: str
    status: str
    error: str | None
    written_at: datetime
    observed_at: datetime


def _insert_absent(conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> int:
    """Insert the rows whose key is not there yet; how many went in."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    count = 0
    for row in rows:
        inserted = conn.execute(dialect.insert(table).values(**row).on_conflict_do_nothing()
                                .returning(table.c.subject_id)).first()
        count += inserted is not None
    return count


def record_decisions(conn: sa.Connection, items: Iterable[Decision], replica: str) -> int:
    """Keep each subject's first decision; later ones are already in the audit trail."""
    return _insert_absent(conn, decisions, [{
        "subject_kind": d.kind, "subject_id": d.subject_id[:200], "agent_name": d.agent[:200], "action": d.action,
        "remediation": d.remediation[:200], "decided_at": format_utc(d.decided_at), "due_at": format_utc(d.due_at),
        "replica": replica[:200], "fingerprint": d.fingerprint[:64], "reason": d.reason[:1000],
        "evidence": d.evidence, "late": int(d.late)} for d in items])


def record_writes(conn: sa.Connection, items: Iterable[Write]) -> int:
    return _insert_absent(conn, theirs, [{
        "subject_kind": w.kind, "subject_id": w.subject_id[:200], "agent_name": w.agent[:200], "action": w.action,
        "status": w.status[:40], "error": (w.error or "")[:MAX_TEXT] or None,
        "written_at": format_utc(w.written_at), "observed_at": format_utc(w.observed_at)} for w in items])


@dataclass(frozen=True, slots=True)
class Open:
    """A subject not judged yet: our decision and their write, as far as known."""

    kind: str
    subject_id: str
    agent: str
    ours: Ours | None
    theirs: Theirs | None
    their_status: str | None = None
    their_error: str | None = None


def open_subjects(conn: sa.Connection) -> dict[tuple[str, str], Open]:
    """Every subject with an unjudged decision of ours or write of theirs, with the other side if known."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for row in conn.execute(sa.select(decisions).where(decisions.c.judged == 0)):
        found.setdefault((row.subject_kind, row.subject_id), {"agent": row.agent_name})["ours"] = row
    for row in conn.execute(sa.select(theirs).where(theirs.c.judged == 0)):
        found.setdefault((row.subject_kind, row.subject_id), {"agent": row.agent_name})["theirs"] = row
    # The other side of an open subject may be there, already marked judged: read it too.
    missing_ours = [k for k, v in found.items() if "ours" not in v]
    missing_theirs = [k for k, v in found.items() if "theirs" not in v]
    for side, table, keys in (("ours", decisions, missing_ours), ("theirs", theirs, missing_theirs)):
        for key in keys:
            other = conn.execute(sa.select(table).where(table.c.subject_kind == key[0],
                                                        table.c.subject_id == key[1])).first()
            if other is not None:
                found[key][side] = other
    out = {}
    for (kind, subject_id), parts in found.items():
        ours_row, theirs_row = parts.get("ours"), parts.get("theirs")
        ours = theirs_ = None
        if ours_row is not None:
            decided, due = parse_utc_or_none(ours_row.decided_at), parse_utc_or_none(ours_row.due_at)
            if decided is not None and due is not None:
                ours = Ours(ours_row.action, decided, due, late=bool(ours_row.late))
        if theirs_row is not None:
            written, observed = parse_utc_or_none(theirs_row.written_at), parse_utc_or_none(theirs_row.observed_at)
            if written is not None and observed is not None:
                theirs_ = Theirs(theirs_row.action, written, observed)
        out[(kind, subject_id)] = Open(kind, subject_id, parts["agent"], ours, theirs_,
                                       theirs_row.status if theirs_row is not None else None,
                                       theirs_row.error if theirs_row is not None else None)
    return out


def record_verdict(conn: sa.Connection, subject: Open, judgement: Judgement, ours: Ours | None, now: datetime,
                   replica: str) -> bool:
    """Give the subject its one verdict; False when another replica (or pass) gave it first."""
    theirs_ = subject.theirs
    inserted = _insert_absent(conn, verdicts, [{
        "subject_kind": subject.kind, "subject_id": subject.subject_id, "agent_name": subject.agent,
        "verdict": judgement.verdict, "action": judgement.action,
        "our_action": ours.action if ours else None,
        "our_decided_at": format_utc(ours.decided_at) if ours else None, "our_late": int(bool(ours and ours.late)),
        "their_action": theirs_.action if theirs_ else None, "their_status": subject.their_status,
        "their_error": subject.their_error,
        "their_written_at": format_utc(theirs_.written_at) if theirs_ else None,
        "lead_seconds": judgement.lead_seconds, "why": judgement.why[:1000], "judged_at": format_utc(now),
        "replica": replica[:200]}]) == 1
    mark_judged(conn, subject.kind, subject.subject_id)
    return inserted


def mark_judged(conn: sa.Connection, kind: str, subject_id: str) -> None:
    """Both sides of the subject are settled: no later pass reads them as open."""
    conn.execute(sa.update(decisions).where(decisions.c.subject_kind == kind, decisions.c.subject_id == subject_id)
                 .values(judged=1))
    conn.execute(sa.update(theirs).where(theirs.c.subject_kind == kind, theirs.c.subject_id == subject_id)
                 .values(judged=1))


def followed(conn: sa.Connection, since: datetime) -> list[str]:
    """Execution ids of verdicts judged since ``since`` on a run they failed, no later status seen yet."""
    v = verdicts.c
    return [r[0] for r in conn.execute(sa.select(v.subject_id).where(
        v.judged_at >= format_utc(since), v.subject_kind == "execution", v.their_status == "failed",
        v.later_status.is_(None)))]


def note_later_status(conn: sa.Connection, subject_id: str, status: str, now: datetime) -> None:
    conn.execute(sa.update(verdicts).where(verdicts.c.subject_kind == "execution", verdicts.c.subject_id == subject_id,
                                           verdicts.c.later_status.is_(None))
                 .values(later_status=status, later_seen_at=format_utc(now)))


def note_their_late_write(conn: sa.Connection, kind: str, subject_id: str, action: str, written_at: datetime) -> None:
    conn.execute(sa.update(verdicts).where(verdicts.c.subject_kind == kind, verdicts.c.subject_id == subject_id,
                                           verdicts.c.their_late_action.is_(None))
                 .values(their_late_action=action, their_late_written_at=format_utc(written_at)))


def counts(conn: sa.Connection, replica: str | None = None,
           since: datetime | None = None) -> dict[tuple[str, str], int]:
    """Verdicts by (verdict, action): a replica's own (to restore its counters) or everyone's."""
    query = sa.select(verdicts.c.verdict, verdicts.c.action, sa.func.count()).group_by(verdicts.c.verdict,
                                                                                      verdicts.c.action)
    if replica is not None:
        query = query.where(verdicts.c.replica == replica)
    if since is not None:
        query = query.where(verdicts.c.judged_at >= format_utc(since))
    return {(verdict, action): int(n) for verdict, action, n in conn.execute(query)}


def leads(conn: sa.Connection, replica: str) -> list[tuple[str, float]]:
    """(action, lead seconds) of a replica's verdicts where both sides acted, to restore its histogram."""
    return [(a, float(s)) for a, s in conn.execute(
        sa.select(verdicts.c.action, verdicts.c.lead_seconds)
        .where(verdicts.c.replica == replica, verdicts.c.lead_seconds.is_not(None)))]


def listed(conn: sa.Connection, since: datetime | None = None) -> list[dict[str, Any]]:
    """Every verdict (oldest judgement first), for the report."""
    query = sa.select(verdicts).order_by(verdicts.c.judged_at, verdicts.c.subject_kind, verdicts.c.subject_id)
    if since is not None:
        query = query.where(verdicts.c.judged_at >= format_utc(since))
    return [dict(r._mapping) for r in conn.execute(query)]


def decision_of(conn: sa.Connection, kind: str, subject_id: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(decisions).where(decisions.c.subject_kind == kind,
                                                  decisions.c.subject_id == subject_id)).first()
    return None if row is None else dict(row._mapping)
