"""Capacity maintenance (every 60 s, apart from the cycle): a ``queued`` row (no lease) queued
longer than 24 hours is expired.

Writes ``failed``, ``completed_at`` now and ``Backlog expired: queued longer than 24 hours``;
``duration_ms`` untouched, no activity close, no event. The guard also holds the ``queued_at``
that was read, so a row re-queued meanwhile is not expired on its old age.
"""

from __future__ import annotations

import sqlalchemy as sa

from exec_watchdog.common.contract import EXPIRE_BACKLOG
from exec_watchdog.platform_access import cleanup_rows
from exec_watchdog.platform_access.cleanup_rows import BACKLOG_MAX_AGE_SECONDS
from exec_watchdog.platform_access.texts import BACKLOG_EXPIRED_TEXT
from exec_watchdog.simulated_platform.cleanup_paths.context import CleanupContext

INTERVAL_SECONDS = 60.0  # Trinity's capacity-maintenance tick


def sweep(ctx: CleanupContext) -> int:
    now = ctx.now()
    with ctx.engine.connect() as conn:
        rows = [r for r in cleanup_rows.pending_cleanup(conn, now, BACKLOG_MAX_AGE_SECONDS)
                if r.status == "queued" and r.queued_at is not None]
    ended = 0
    for row in rows:
        def write(conn: sa.Connection, execution_id: str = row.execution_id, queued_at: str = row.queued_at or ""
                  ) -> bool:
            return cleanup_rows.expire_backlog(conn, execution_id, queued_at, BACKLOG_EXPIRED_TEXT, now)

        ended += ctx.decide(row.execution_id, row.agent_name, EXPIRE_BACKLOG, BACKLOG_EXPIRED_TEXT, now, write)
    return ended
