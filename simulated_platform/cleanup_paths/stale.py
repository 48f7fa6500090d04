"""Phase 1, the stale sweep: a ``running`` row (no lease) older than its window is failed.

The window is the agent's ``COALESCE(execution_timeout_seconds, 3600) + 300`` s; for an agent
missing from ``agent_ownership`` or soft-deleted, a flat 120 minutes. Trinity asks no agent and
no in-flight marker here: a run still going on its agent is failed all the same (and not
terminated). Writes ``failed``, ``completed_at`` now, ``duration_ms`` NULL and
``Marked as failed by cleanup: exceeded {N}s stale timeout``; then every still-open dispatch
activity of the run is failed with the sweep's text (``duration_ms`` NULL). No slot is released:
the slot phase reclaims it when its TTL runs out.
"""

from __future__ import annotations

from exec_watchdog.common.contract import FAIL_STALE
from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.slot_expiry import SLOT_TTL_MARGIN_SECONDS
from exec_watchdog.platform_access.texts import STALE_SWEEP_ACTIVITY_TEXT, stale_text
from exec_watchdog.simulated_platform.cleanup_paths.context import CleanupContext

UNOWNED_WINDOW_SECONDS = 120 * 60  # Trinity's EXECUTION_STALE_TIMEOUT_MINUTES, for unknown or deleted agents


def window_seconds(row: db.Execution) -> int:
    if row.agent_timeout_seconds is None:
        return UNOWNED_WINDOW_SECONDS
    return row.agent_timeout_seconds + SLOT_TTL_MARGIN_SECONDS


def sweep(ctx: CleanupContext) -> int:
    """Fail every stale row; how many were ended (or, in shadow, newly would be)."""
    with ctx.engine.connect() as conn:
        live, _ = db.running_executions(conn)
        deleted, _ = db.deleted_agents_running(conn)
    now = ctx.now()
    ended = 0
    for row in live + deleted:
        window = window_seconds(row)
        if row.runtime_seconds(now) <= window:
            continue
        ended += ctx.fail(row, FAIL_STALE, stale_text(window), now, STALE_SWEEP_ACTIVITY_TEXT,
                          every_open_activity=True)
    return ended
