"""What a shadow remediator would have done, as one decision per subject (``shadow_store.decisions``).

A ``would_recover`` verdict of the remediator names the alert's remediation; the decision kept for
the comparison names what would really have happened:

- an orphan alert whose run has a retained result to claim → ``claim_result``;
- a slot remediation that would only remove the slot (a leak, or an expired slot whose row stays as
  it is) → subject ``slot`` ``{agent}/{execution_id}``: no row would be written;
- ``fail_stale_activity`` → subject ``activity`` (the alert's ``execution_id`` label carries the
  activity's id);
- everything else → subject ``execution``, the alert's remediation.

Its ``due_at`` ends their window (``shadow_verdicts.their_window``); for a leaked slot, the TTL the
slot had left when we decided is added (Trinity drops a leaked slot only once it has expired).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Protocol

from exec_watchdog.common.contract import CLAIM_RESULT, FAIL_STALE_ACTIVITY, RELEASE_LEAKED_SLOT
from exec_watchdog.platform_access import database as db
from exec_watchdog.remediator.payload import Alert
from exec_watchdog.remediator.shadow_store import Decision
from exec_watchdog.remediator.shadow_verdicts import Kind, Settings, their_window


class Decided(Protocol):
    """What this module reads of one alert's verdict (``remediate.Verdict``)."""

    alert: Alert
    reason: str
    claim: db.Claim | None
    slot_only: bool
    slot_leak: bool


def subject_of(v: Decided) -> tuple[Kind, str, str]:
    """(subject kind, subject id, action) of what the verdict would have done."""
    alert = v.alert
    if alert.remediation == FAIL_STALE_ACTIVITY:
        return "activity", alert.execution_id, FAIL_STALE_ACTIVITY
    if v.slot_only:
        return "slot", slot_id(alert.agent, alert.execution_id), RELEASE_LEAKED_SLOT if v.slot_leak \
            else alert.remediation
    return "execution", alert.execution_id, CLAIM_RESULT if v.claim is not None else alert.remediation


def slot_id(agent: str, execution_id: str) -> str:
    return f"{agent}/{execution_id}"


def slot_ttl_left(evidence: str | None) -> float:
    """Seconds of TTL the slot had left when we decided (from its evidence); 0 when not known."""
    try:
        slot = json.loads(evidence or "{}").get("slot") or {}
        return max(0.0, float(slot["ttl_seconds"]) - float(slot["age_seconds"]))
    except (ValueError, TypeError, KeyError, AttributeError):
        return 0.0


def decision(v: Decided, evidence: str | None, decided_at: datetime, settings: Settings) -> Decision:
    kind, subject, action = subject_of(v)
    wait = slot_ttl_left(evidence) if kind == "slot" and action == RELEASE_LEAKED_SLOT else 0.0
    due = decided_at + timedelta(seconds=their_window(action, settings, wait))
    return Decision(kind, subject, v.alert.agent, action, v.alert.remediation, decided_at, due,
                    v.alert.fingerprint, v.reason, evidence)
