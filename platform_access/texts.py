"""The texts Trinity writes into ``schedule_executions.error`` and ``agent_activities.error``, exactly.

Kept together so the wording operators grep for matches Trinity's own, in one place: the
remediator writes them when it takes over a path, and the simulated platform's model of Trinity's
cleanup service (``simulated_platform/platform_cleanup.py``) writes them as Trinity does. Both import them from here.
"""

from __future__ import annotations

from exec_watchdog.platform_access.agent_client import LastError

MAX_ERROR_CHARS = 2_000  # Trinity's MAX_ERROR_MESSAGE_LENGTH: the whole text, prefix included
NO_RETAINED_RESULT_SUFFIX = ", no retained result"


def orphan_text(agent: str, *, reports_pending: bool, no_retained_result: bool) -> str:
    """What the agent said (``not pending`` only when its image reports pending runs) and what we checked."""
    agent_side = ("not running, not pending, not recently completed" if reports_pending
                  else "not running, not recently completed")
    text = (f"Execution not tracked by agent '{agent}' ({agent_side}) and no live backend dispatcher "
            "(no in-flight marker) — recovered by watchdog")
    return text + NO_RETAINED_RESULT_SUFFIX if no_retained_result else text


def overdue_text(runtime_seconds: float, timeout_seconds: int) -> str:
    minutes = int(runtime_seconds // 60)
    return (f"Execution auto-terminated after {minutes} minutes by watchdog "
            f"(exceeded timeout of {timeout_seconds}s)")


def with_last_error(text: str, last_error: LastError | None) -> str:
    """Prefix the agent's last error, if it has one, and cap the whole at 2,000 characters."""
    if last_error is not None and last_error.error_message:
        text = f"[{last_error.error_type or 'error'}] {last_error.error_message}. Cleanup: {text}"
    return text[:MAX_ERROR_CHARS]


# --- Capacity slots (remediator/slot_reclaim.py): Trinity's Phase 3 texts, exactly -----------------

def slot_expired_text(agent: str) -> str:
    """A slot past its TTL, the run unknown to its agent and to every dispatcher: terminated and failed."""
    return f"lease_expired: Stale execution — slot TTL expired for agent '{agent}', cleaned by cleanup service"


def slot_unreachable_text(agent: str) -> str:
    """A slot past its TTL whose agent stays unreachable (Trinity #497)."""
    return (f"lease_expired: Stale execution — agent '{agent}' unresponsive during cleanup re-verify, "
            "slot TTL expired (#497)")


# -- Activity closes and the cleanup paths' texts (Trinity's cleanup_service / db/activities) ---------
# The activity close after a stale or no-session sweep (duration_ms NULL).
STALE_SWEEP_ACTIVITY_TEXT = "Marked as failed by cleanup: execution swept as stale"
# The activity close after a slot reclaim (Trinity's _close_stale_slot_activity).
SLOT_RECLAIM_ACTIVITY_TEXT = "lease_expired: slot lease expired (no result callback)"
# Trinity's 120-minute activity backstop (mark_stale_activities_failed).
STALE_ACTIVITY_TEXT = "Marked as failed by cleanup: exceeded 120-minute timeout"


def stale_activity_text(seconds: float) -> str:
    """Trinity's backstop text for the bound in use (120 minutes: exactly STALE_ACTIVITY_TEXT)."""
    return f"Marked as failed by cleanup: exceeded {seconds / 60:g}-minute timeout"
# Phase 1c: a skipped row never given a completed_at.
SKIPPED_FINALIZED_TEXT = "Finalized by cleanup: skipped execution"
# Capacity maintenance: a queued row older than 24 hours.
BACKLOG_EXPIRED_TEXT = "Backlog expired: queued longer than 24 hours"


# Trinity's cleanup sweeps write these texts alone: they never ask the agent for /last-error.
def stale_text(window_seconds: int) -> str:
    """Trinity's stale sweep (Phase 1): the window is the agent's timeout + 300 s, or 7,200 s."""
    return f"Marked as failed by cleanup: exceeded {window_seconds}s stale timeout"


def no_session_text(min_age_seconds: int) -> str:
    """Trinity's no-session sweep (Phase 1b), with its 60 s."""
    return f"Silent launch failure: no Claude session created within {min_age_seconds} seconds"
