"""End-of-run checks for the paths Trinity's cleanup service owns, over a whole run (soak, end-to-end tests):

- every injected skipped row and expired queued row ended ``failed`` with Trinity's exact text;
- every injected stale activity ended ``failed``;
- no terminal execution's dispatch activity is still ``started`` (every recovery closed its pair);
- Trinity's UI feed holds exactly one ``watchdog_recovery`` entry per recovery in the outbox.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa

from exec_watchdog.platform_access.schema import DISPATCH_ACTIVITY_TYPES, agent_activities, schedule_executions
from exec_watchdog.remediator import texts
from exec_watchdog.remediator.audit import recoveries
from exec_watchdog.testbed.trinity_stream import recoveries_per_execution


@dataclass
class CleanupFindings:
    rows_not_ended: list[str] = field(default_factory=list)  # injected skipped/queued rows not ended right
    activities_not_failed: list[str] = field(default_factory=list)  # injected stale activities still open
    open_pairs: list[str] = field(default_factory=list)  # terminal executions whose activity is still started
    stream_missing: list[str] = field(default_factory=list)  # recoveries without their stream entry
    stream_duplicates: list[str] = field(default_factory=list)  # recoveries with more than one

    @property
    def broken(self) -> bool:
        return bool(self.rows_not_ended or self.activities_not_failed or self.open_pairs or self.stream_missing
                    or self.stream_duplicates)


def check_cleanup(engine: sa.Engine, redis_url: str | None, *, skipped: Iterable[str] = (),
                  queued: Iterable[str] = (), stale_activities: Iterable[str] = ()) -> CleanupFindings:
    f = CleanupFindings()
    t, a = schedule_executions.c, agent_activities.c
    expected = {**{i: texts.SKIPPED_FINALIZED_TEXT for i in skipped}, **{i: texts.BACKLOG_EXPIRED_TEXT for i in queued}}
    with engine.connect() as conn:
        if expected:
            ended = {r.id: (r.status, r.error) for r in conn.execute(
                sa.select(t.id, t.status, t.error).where(t.id.in_(list(expected))))}
            f.rows_not_ended = sorted(i for i, text in expected.items() if ended.get(i) != ("failed", text))
        stale = list(stale_activities)
        if stale:
            states = dict(conn.execute(sa.select(a.id, a.activity_state).where(a.id.in_(stale))).all())
            f.activities_not_failed = sorted(i for i in stale if states.get(i) != "failed")
        f.open_pairs = sorted(str(i) for i in conn.execute(
            sa.select(a.related_execution_id).select_from(
                agent_activities.join(schedule_executions, t.id == a.related_execution_id))
            .where(a.activity_state == "started", a.activity_type.in_(DISPATCH_ACTIVITY_TYPES),
                   t.status.in_(("success", "failed", "cancelled")))).scalars())
        outbox = Counter(str(i) for i in conn.execute(
            sa.select(recoveries.c.execution_id).where(recoveries.c.announced_at.is_not(None))).scalars())
    if redis_url is not None:
        stream = recoveries_per_execution(redis_url)
        f.stream_missing = sorted(i for i, n in outbox.items() if stream[i] < n)
        f.stream_duplicates = sorted(i for i, n in stream.items() if n > outbox.get(i, 0))
    return f
