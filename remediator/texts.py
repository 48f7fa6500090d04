"""The recovery texts, worded as Trinity words them: they live in :mod:`exec_watchdog.platform_access.texts`
(the simulated platform's model of Trinity's cleanup writes them too); the remediator's modules keep
importing them from here."""

from __future__ import annotations

from exec_watchdog.platform_access.texts import (
    BACKLOG_EXPIRED_TEXT,
    MAX_ERROR_CHARS,
    NO_RETAINED_RESULT_SUFFIX,
    SKIPPED_FINALIZED_TEXT,
    SLOT_RECLAIM_ACTIVITY_TEXT,
    STALE_ACTIVITY_TEXT,
    STALE_SWEEP_ACTIVITY_TEXT,
    no_session_text,
    orphan_text,
    overdue_text,
    slot_expired_text,
    slot_unreachable_text,
    stale_activity_text,
    stale_text,
    with_last_error,
)

__all__ = [
    "BACKLOG_EXPIRED_TEXT",
    "MAX_ERROR_CHARS",
    "NO_RETAINED_RESULT_SUFFIX",
    "SKIPPED_FINALIZED_TEXT",
    "SLOT_RECLAIM_ACTIVITY_TEXT",
    "STALE_ACTIVITY_TEXT",
    "STALE_SWEEP_ACTIVITY_TEXT",
    "no_session_text",
    "orphan_text",
    "overdue_text",
    "slot_expired_text",
    "slot_unreachable_text",
    "stale_activity_text",
    "stale_text",
    "with_last_error",
]
