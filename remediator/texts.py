"""The texts a recovery writes into ``schedule_executions.error``, worded as Trinity's watchdog words them.

Kept together so the wording operators grep for matches Trinity's own, in one place.
"""

from __future__ import annotations

from exec_watchdog.common.contract import RECLAIM_EXPIRED_SLOT, RECLAIM_SLOT_UNREACHABLE
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


SLOT_RECLAIM_ACTIVITY_TEXT = "lease_expired: slot lease expired (no result callback)"
# The error a run's paired activity is closed with, by the remediation that failed the run. A
# ``release_leaked_slot`` recovery changes no row and closes no activity.
ACTIVITY_CLOSE_TEXTS: dict[str, str] = {
    RECLAIM_EXPIRED_SLOT: SLOT_RECLAIM_ACTIVITY_TEXT,
    RECLAIM_SLOT_UNREACHABLE: SLOT_RECLAIM_ACTIVITY_TEXT,
}
