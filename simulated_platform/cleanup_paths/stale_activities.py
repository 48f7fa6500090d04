"""The activity backstop: any activity ``started`` more than 120 minutes ago is failed, whatever
its run did: ``duration_ms`` NULL, ``Marked as failed by cleanup: exceeded 120-minute timeout``.
The decision names the activity's execution (or, without one, the activity itself).
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from exec_watchdog.common.contract import FAIL_STALE_ACTIVITY
from exec_watchdog.platform_access import activities
from exec_watchdog.platform_access.activities import STALE_ACTIVITY_MINUTES
from exec_watchdog.platform_access.texts import STALE_ACTIVITY_TEXT
from exec_watchdog.simulated_platform.cleanup_paths.context import CleanupContext


def sweep(ctx: CleanupContext) -> int:
    now = ctx.now()
    with ctx.engine.connect() as conn:
        found = activities.started_activities(conn, now - timedelta(minutes=STALE_ACTIVITY_MINUTES))
    ended = 0
    for activity in found:
        def write(conn: sa.Connection, activity_id: str = activity.id) -> bool:
            return activities.fail_stale(conn, activity_id, STALE_ACTIVITY_TEXT, now)

        ended += ctx.decide(activity.related_execution_id or activity.id, activity.agent_name, FAIL_STALE_ACTIVITY,
                            STALE_ACTIVITY_TEXT, now, write)
    return ended
