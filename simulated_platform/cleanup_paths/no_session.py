"""Phase 1b, the no-session sweep: a ``running`` row (no lease) started more than 60 s ago whose
``claude_session_id`` is NULL or '' is a silent launch failure.

Trinity's backend writes ``dispatched`` / ``dispatched_async`` there when it dispatches, so only a
run that was never handed to its agent is caught. Like Phase 1 it asks nobody. Writes
``failed``, ``completed_at`` now, ``duration_ms`` NULL and
``Silent launch failure: no Claude session created within 60 seconds``; the open dispatch
activities are failed with the sweep's text.
"""

from __future__ import annotations

from exec_watchdog.common.contract import FAIL_NO_SESSION
from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.texts import STALE_SWEEP_ACTIVITY_TEXT, no_session_text
from exec_watchdog.simulated_platform.cleanup_paths.context import CleanupContext

NO_SESSION_SECONDS = 60  # Trinity's NO_SESSION_TIMEOUT_SECONDS


def sweep(ctx: CleanupContext) -> int:
    """Fail every run without a session past the minute; how many were ended (or would be)."""
    with ctx.engine.connect() as conn:
        live, _ = db.running_executions(conn)
        deleted, _ = db.deleted_agents_running(conn)
    now = ctx.now()
    text = no_session_text(NO_SESSION_SECONDS)
    ended = 0
    for row in live + deleted:
        if not row.session_missing or row.runtime_seconds(now) <= NO_SESSION_SECONDS:
            continue
        ended += ctx.fail(row, FAIL_NO_SESSION, text, now, STALE_SWEEP_ACTIVITY_TEXT, every_open_activity=True)
    return ended
