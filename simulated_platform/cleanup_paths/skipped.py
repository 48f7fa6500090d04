"""Phase 1c: a ``skipped`` row never given a ``completed_at`` (any age, no lease) is finalized.

Writes ``failed``, ``completed_at = COALESCE(started_at, now)``, ``duration_ms`` 0 and
``Finalized by cleanup: skipped execution``. No activity close, no event.
"""

from __future__ import annotations

import math

import sqlalchemy as sa

from exec_watchdog.common.contract import FINALIZE_SKIPPED
from exec_watchdog.platform_access import cleanup_rows
from exec_watchdog.platform_access.texts import SKIPPED_FINALIZED_TEXT
from exec_watchdog.simulated_platform.cleanup_paths.context import CleanupContext


def sweep(ctx: CleanupContext) -> int:
    now = ctx.now()
    with ctx.engine.connect() as conn:
        rows = [r for r in cleanup_rows.pending_cleanup(conn, now, math.inf) if r.status == "skipped"]
    ended = 0
    for row in rows:
        def write(conn: sa.Connection, execution_id: str = row.execution_id) -> bool:
            return cleanup_rows.finalize_skipped(conn, execution_id, SKIPPED_FINALIZED_TEXT, now)

        ended += ctx.decide(row.execution_id, row.agent_name, FINALIZE_SKIPPED, SKIPPED_FINALIZED_TEXT, now, write)
    return ended
