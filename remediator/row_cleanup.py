"""Skipped rows and backlog rows (Trinity's Phase 1c and backlog expiry): every rule in one place.

The alert is a hint; at action time the row is read again, aged on the database's clock:

- ``finalize_skipped``: the row must still be ``skipped`` with no ``completed_at`` (any age) →
  ``failed``, ``completed_at = COALESCE(started_at, now)``, ``duration_ms = 0``,
  ``Finalized by cleanup: skipped execution``;
- ``expire_backlog``: the row must still be ``queued`` with ``queued_at`` more than the backlog
  age ago (Trinity: 24 h) → ``failed``, ``completed_at = now``,
  ``Backlog expired: queued longer than 24 hours`` (``duration_ms`` untouched);
- either way: never a row with ``lease_expires_at`` set, never a row of another agent than the
  alert names; no agent is asked (the row alone decides, as in Trinity).

Neither path closes an activity or writes an agent event (remediator/closing.py), and the
announcement names the path (``skipped_finalized`` / ``backlog_expired``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from exec_watchdog.common.contract import EXPIRE_BACKLOG, FINALIZE_SKIPPED
from exec_watchdog.platform_access import cleanup_rows
from exec_watchdog.platform_access.cleanup_rows import CleanupRow
from exec_watchdog.remediator import texts

TEXTS = {FINALIZE_SKIPPED: texts.SKIPPED_FINALIZED_TEXT, EXPIRE_BACKLOG: texts.BACKLOG_EXPIRED_TEXT}


@dataclass(frozen=True, slots=True)
class RowDecision:
    act: bool
    reason: str  # why not, when not acting
    queued_at: str | None = None  # the backlog guard's value


def decide(remediation: str, agent: str, row: CleanupRow | None, backlog_max_age_seconds: float) -> RowDecision:
    """Whether ``remediation`` may end ``row`` now."""
    if row is None:
        return RowDecision(False, "no such execution in the database (or its timestamps are unreadable)")
    if row.leased:
        return RowDecision(False, "lease row: another reaper owns it")
    if row.agent_name != agent:
        return RowDecision(False, f"alert names agent {agent!r}, the row says {row.agent_name!r}")
    if remediation == FINALIZE_SKIPPED:
        if row.status != "skipped" or row.completed:
            return RowDecision(False, f"finalized meanwhile: status is {row.status!r}"
                                      + (", completed_at set" if row.completed else ""))
        return RowDecision(True, "")
    if row.status != "queued":
        return RowDecision(False, f"left the queue meanwhile: status is {row.status!r}")
    if row.age_seconds <= backlog_max_age_seconds:
        return RowDecision(False, f"not expired: queued {row.age_seconds:.0f} s of {backlog_max_age_seconds:g} s")
    return RowDecision(True, "", row.queued_at)


def read(conn: sa.Connection, execution_id: str, now: datetime) -> CleanupRow | None:
    return cleanup_rows.get_row(conn, execution_id, now)


def transition(conn: sa.Connection, remediation: str, execution_id: str, queued_at: str | None,
               now: datetime) -> bool:
    """The guarded write of ``remediation``; True when this call won."""
    if remediation == FINALIZE_SKIPPED:
        return cleanup_rows.finalize_skipped(conn, execution_id, TEXTS[remediation], now)
    if queued_at is None:
        return False
    return cleanup_rows.expire_backlog(conn, execution_id, queued_at, TEXTS[remediation], now)
