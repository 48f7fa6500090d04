"""One execution's whole story, in time order, for the engineer on call and the postmortem.

What the platform row says now; then every event the watchdog knows of: the run started, the alert
fired, each notification that reached a replica, each decision with its evidence, the recovery (the
guarded transition), the slot release and the announcement. Served by ``GET
/api/v1/executions/{id}`` and printed by ``exec-watchdog explain``; both build it here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from exec_watchdog.common.contract import RELEASE_LEAKED_SLOT
from exec_watchdog.common.redaction import redact
from exec_watchdog.platform_access.schema import schedule_executions
from exec_watchdog.platform_access.timestamps import BadTimestamp, parse_utc
from exec_watchdog.remediator import audit
from exec_watchdog.remediator.announce import recovery_event, story_url
from exec_watchdog.remediator.evidence import GUARD

MAX_DECISIONS = 500  # the newest ones; a story longer than that says how many it left out
# Same instant: the order things happen in.
_ORDER = ("started", "alert_fired", "notification", "decision", "recovered", "slot_released", "announced",
          "row_completed")
_NEVER = datetime.max.replace(tzinfo=UTC)


def load(conn: sa.Connection, execution_id: str, external_url: str = "") -> dict[str, Any] | None:
    """The story of ``execution_id``; ``None`` when neither the platform nor the watchdog knows it."""
    row = conn.execute(sa.select(
        schedule_executions.c.agent_name, schedule_executions.c.schedule_id, schedule_executions.c.status,
        schedule_executions.c.started_at, schedule_executions.c.completed_at, schedule_executions.c.error,
        schedule_executions.c.lease_expires_at,
    ).where(schedule_executions.c.id == execution_id)).first()
    decided = conn.execute(sa.select(audit.decisions).where(audit.decisions.c.execution_id == execution_id)
                           .order_by(audit.decisions.c.id.desc()).limit(MAX_DECISIONS + 1)).all()
    recovery = conn.execute(sa.select(audit.recoveries)
                            .where(audit.recoveries.c.execution_id == execution_id)).first()
    if row is None and not decided and recovery is None:
        return None
    decisions = [_decision(d) for d in reversed(decided[:MAX_DECISIONS])]
    events = _platform_events(row, recovery) + _alert_events(decisions) + [_decision_event(d) for d in decisions]
    if recovery is not None:
        events += _recovery_events(recovery, external_url)
    events.sort(key=lambda e: (_instant(e["at"]), _ORDER.index(e["kind"])))
    return {
        "execution_id": execution_id,
        "story_url": story_url(external_url, execution_id) or None,
        "execution": None if row is None else {
            "agent": row.agent_name, "schedule_id": row.schedule_id, "status": row.status,
            # str(): a database with real timestamp columns hands back datetimes
            "started_at": str(row.started_at), "completed_at": _optional_text(row.completed_at),
            "error": None if row.error is None else redact(str(row.error)),  # whoever wrote it
            "leased": row.lease_expires_at is not None},
        "recovery": None if recovery is None else {
            "action": recovery.action, "reason": redact(recovery.reason), "recovered_at": recovery.recovered_at,
            "alert_started_at": recovery.alert_started_at, "runtime_seconds": recovery.runtime_seconds,
            "slot_released_at": recovery.slot_released_at, "announced_at": recovery.announced_at,
            "claimed_by": recovery.claimed_by},
        "decisions_left_out": max(0, len(decided) - MAX_DECISIONS),
        "timeline": events,
    }


def _optional_text(value: object) -> str | None:
    return None if value is None else str(value)


def _instant(value: str) -> datetime:
    try:
        return parse_utc(value)
    except BadTimestamp:
        return _NEVER  # unreadable times go last rather than hiding the entry


def _event(kind: str, at: str, summary: str, **details: Any) -> dict[str, Any]:
    return {"at": at, "kind": kind, "summary": summary, **details}


def _decision(row: Any) -> dict[str, Any]:
    evidence = None
    if row.evidence:
        try:
            evidence = json.loads(row.evidence)
        except ValueError:
            evidence = {"unreadable": row.evidence[:200]}
    return {"id": row.id, "decided_at": row.decided_at, "replica": row.replica, "alertname": row.alertname,
            "alert_status": row.alert_status, "fingerprint": row.fingerprint, "remediation": row.remediation,
            "agent": row.agent_name, "outcome": row.outcome, "reason": redact(row.reason), "evidence": evidence}


def _platform_events(row: Any, recovery: Any) -> list[dict[str, Any]]:
    """The run's start, and its completion unless that was our own recovery's write."""
    if row is None:
        return []
    events = [_event("started", str(row.started_at), f"execution started on agent {row.agent_name} "
                                                    f"(schedule {row.schedule_id})")]
    ours = recovery is not None and _instant(str(row.completed_at)) == _instant(recovery.recovered_at)
    if row.completed_at and not ours:
        events.append(_event("row_completed", str(row.completed_at), f"the platform completed the row: "
                                                                   f"status {row.status}"))
    return events


def _alert_events(decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alert firing once per alert instance, and each notification that brought it."""
    events, fired = [], set()
    for d in decisions:
        evidence = d["evidence"] or {}
        alert, delivery = evidence.get("alert") or {}, evidence.get("delivery")
        instance = (d["fingerprint"], alert.get("starts_at"))
        if alert.get("starts_at") and instance not in fired:
            fired.add(instance)
            events.append(_event("alert_fired", alert["starts_at"], f"{d['alertname']} started firing "
                                 f"(fingerprint {d['fingerprint'] or 'none'})", fingerprint=d["fingerprint"]))
        if delivery:
            events.append(_event(
                "notification", delivery["received_at"],
                f"{d['alert_status']} notification reached {d['replica']} from "
                f"{delivery.get('alertmanager') or delivery.get('peer') or 'an unknown sender'} "
                f"(delivery {delivery.get('deliveries_seen')} of this alert seen there)",
                decision_id=d["id"], delivery=delivery))
    return events


def _decision_event(d: dict[str, Any]) -> dict[str, Any]:
    return _event("decision", d["decided_at"], f"{d['outcome']} by {d['replica']}: {d['reason']}", decision=d,
                  facts=describe(d["evidence"]))


def describe(evidence: Mapping[str, Any] | None) -> list[str]:
    """The evidence as sentences, one fact a line: what the page and ``explain`` show people."""
    if not evidence:
        return ["no evidence recorded (decided before evidence was kept, or recording was switched off)"]
    lines = []
    for key, sentence in _SENTENCES:
        if evidence.get(key):
            lines.append(sentence(evidence[key], evidence))
    if evidence.get("truncated"):
        lines.append(f"left out to stay within the size bound: {', '.join(evidence['truncated'])}")
    return lines


def _alert(a: Mapping[str, Any], e: Mapping[str, Any]) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in a.get("labels", {}).items())
    return (f"alert ({a.get('status')}): firing since {a.get('starts_at')}, "
            f"fingerprint {a.get('fingerprint') or 'none'}, labels {{{labels}}}, "
            f"from {a.get('generator_url') or 'no generator URL'}")


def _delivery(d: Mapping[str, Any], e: Mapping[str, Any]) -> str:
    return (f"delivered by {d.get('alertmanager') or 'an Alertmanager that gave no external URL'} "
            f"(peer {d.get('peer') or 'unknown'}, {d.get('user_agent') or 'no user agent'}) to receiver "
            f"{d.get('receiver') or 'unnamed'}; delivery {d.get('deliveries_seen')} of this alert seen by "
            f"{e.get('replica')}; {d.get('alerts_in_notification')} alert(s) in the notification")


def _row(r: Mapping[str, Any], e: Mapping[str, Any]) -> str:
    if not r.get("found"):
        return f"row as read at {r.get('read_at')}: no such execution in the database"
    if r.get("readable") is False:
        return f"row as read at {r.get('read_at')}: unreadable ({r.get('problem')})"
    lease = "; leased by another reaper" if r.get("leased") else ""
    return (f"row as read at {r.get('read_at')}: status {r.get('status')}, agent {r.get('agent')}, started "
            f"{r.get('started_at')} (age {r.get('age_seconds')} s), timeout {r.get('timeout_seconds')} s "
            f"from the {r.get('timeout_source')}{lease}")


def _slot(s: Mapping[str, Any], e: Mapping[str, Any]) -> str:
    paused = "; governor:pause exists (slot cleanup paused)" if s.get("governor_paused") else ""
    if not s.get("held"):
        return f"capacity slot: not held{paused}"
    timeout = s.get("hash_timeout_seconds")
    source = (f"hash timeout {timeout} s + 300" if timeout is not None
              else "no hash: the agent's timeout + 300, else 1200")
    return (f"capacity slot: acquired at {s.get('acquired_at')} (epoch s), {s.get('age_seconds')} s ago; TTL "
            f"{s.get('ttl_seconds')} s ({source}){paused}")


def _silences(s: Mapping[str, Any], e: Mapping[str, Any]) -> str:
    if not s.get("answered_by"):
        return f"silence re-check failed: {s.get('error')}"
    unanswered = f"; not answering: {'; '.join(s['unanswered'])}" if s.get("unanswered") else ""
    return (f"silence re-check answered by {s['answered_by']}: {s.get('active')} active, matching this alert: "
            f"{', '.join(s.get('matching') or []) or 'none'}{unanswered}")


def _answer(a: Mapping[str, Any]) -> str:
    took = f" in {a['response_ms']} ms" if "response_ms" in a else ""
    if a.get("answer") == "answered":
        return f"{a.get('asked')} answered{took}"
    reach = "" if a.get("reachable") else ", unreachable"
    return f"{a.get('asked')} not answered ({a.get('answer')}{reach}){took}: {a.get('detail', '')}"


def _agent(a: Mapping[str, Any], e: Mapping[str, Any]) -> str:
    if a.get("answer") != "answered":
        return f"agent: {_answer(a)}"
    where = [name for key, name in (("in_running", "running"), ("in_pending", "pending"),
                                    ("in_recently_completed", "recently completed")) if a.get(key)]
    place = f"the execution is {' and '.join(where)}" if where else \
        "the execution is in none of running, pending, recently completed"
    return (f"agent: {_answer(a)}: {place} (lists: running {a.get('running')}, pending {a.get('pending')}, "
            f"recently completed {a.get('recently_completed')})")


def _terminate(t: Mapping[str, Any], e: Mapping[str, Any]) -> str:
    if t.get("answer") != "answered":
        return f"terminate: {_answer(t)}"
    return f"terminate: {_answer(t)}: {t.get('status')} (returncode {t.get('returncode')})"


def _inflight(i: Mapping[str, Any], e: Mapping[str, Any]) -> str:
    marker = f", marker {i['marker']}" if i.get("marker") else ""
    detail = f": {i['detail']}" if i.get("detail") else ""
    return f"in-flight dispatch marker: {i.get('verdict')}{marker}{detail}"


def _retained(r: Mapping[str, Any], e: Mapping[str, Any]) -> str:
    known = ", ".join(f"{k} {r[k]}" for k in ("http_status", "status", "retained_at", "response_ms") if k in r)
    detail = f": {r['detail']}" if r.get("detail") else ""
    return f"retained result: {r.get('verdict')}{f' ({known})' if known else ''}{detail}"


def _last_error(r: Mapping[str, Any], e: Mapping[str, Any]) -> str:
    if r.get("answer") != "answered":
        return f"last error: {_answer(r)}"
    return f"last error: {_answer(r)}: [{r.get('error_type')}] {r.get('error_message')}"


def _update(u: Mapping[str, Any], e: Mapping[str, Any]) -> str:
    guard = u.get("guard", GUARD)
    if u.get("won"):
        wrote = u.get("wrote") or {}
        return f"guarded update ({guard}) changed the row: status {wrote.get('status')}, error {wrote.get('error')!r}"
    return f"guarded update ({guard}) changed nothing: another writer changed the row first"


def _timings(t: Mapping[str, Any], e: Mapping[str, Any]) -> str:
    parts = [f"alert start to decision {t.get('alert_start_to_decision_s')} s"]
    if "received_to_decision_ms" in t:
        parts.append(f"received to decision {t['received_to_decision_ms']} ms")
    parts += [f"{call} {ms} ms" for call, ms in (t.get("calls") or {}).items()]
    return "timings: " + "; ".join(parts)


_SENTENCES: tuple[tuple[str, Callable[[Mapping[str, Any], Mapping[str, Any]], str]], ...] = (
    ("alert", _alert), ("delivery", _delivery), ("row", _row), ("slot", _slot), ("silences", _silences),
    ("inflight", _inflight),
    ("agent", _agent), ("retained_result", _retained), ("terminate", _terminate), ("last_error", _last_error),
    ("update", _update), ("timings", _timings))


def _recovery_events(recovery: Any, external_url: str) -> list[dict[str, Any]]:
    what = ("slot released, no row changed" if recovery.action == RELEASE_LEAKED_SLOT
            else "marked failed by the guarded update")
    events = [_event("recovered", recovery.recovered_at, f"{what} ({recovery.action}): {redact(recovery.reason)}",
                     action=recovery.action)]
    if recovery.slot_released_at:
        events.append(_event("slot_released", recovery.slot_released_at, "capacity slot released"))
    if recovery.announced_at:
        announced = recovery_event(audit.Recovery(
            execution_id=recovery.execution_id, agent_name=recovery.agent_name, action=recovery.action,
            reason=recovery.reason, fingerprint=recovery.fingerprint, runtime_seconds=recovery.runtime_seconds,
            alert_started_at=_instant(recovery.alert_started_at), recovered_at=_instant(recovery.recovered_at)),
            external_url)
        events.append(_event("announced", recovery.announced_at, f"announced as {announced['action']}",
                             event=announced))
    return events
