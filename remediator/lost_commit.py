"""A COMMIT whose reply was lost: did it happen? Read it back instead of guessing.

When the connection fails while COMMIT is under way, the transaction may have committed (the
server got it, its answer was lost) or not. Retrying as if it had not gives a run whose audit trail
says "retry" then "skipped", and whose announcement waits for the background sweep; assuming it
had is worse. The transition's outbox rows (``watchdog_recoveries``) are written in the same
transaction as its guarded updates, so they tell: all there, it committed; none there, it rolled
back. The platform's row (status, error, completed_at) is read alongside, for the record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from exec_watchdog.platform_access.schema import schedule_executions
from exec_watchdog.remediator import audit


class LostCommit(Exception):
    """The connection failed during COMMIT: the transaction may or may not have happened."""

    def __init__(self, winners: list[audit.Recovery], error: sa.exc.DBAPIError) -> None:
        super().__init__(str(error))
        self.winners, self.error = winners, error


@dataclass(frozen=True, slots=True)
class ReadBack:
    committed_ids: set[str]  # the executions whose outbox row is there
    rows: dict[str, Any]  # execution id -> (id, status, error, completed_at) as the database has it now

    @property
    def committed(self) -> bool:
        """For one transaction's recoveries: its outbox rows are all there or none is."""
        return bool(self.committed_ids)

    def describe(self, execution_id: str, error: str) -> str:
        row = self.rows.get(execution_id)
        if row is None:
            return "the commit's reply was lost, read back: the row is gone, outbox row present"
        return (f"the commit's reply was lost, read back: status={row.status!r}, completed_at={row.completed_at!r}, "
                f"error written: {'yes' if row.error == error else 'no'}, outbox row present")


def read_back(engine: sa.Engine, winners: list[audit.Recovery], within_seconds: float,
              pause: float = 0.5) -> ReadBack | None:
    """What the lost commit did, asked again until the database answers; None if it never did."""
    deadline = time.monotonic() + within_seconds
    table = schedule_executions
    while True:
        try:
            with engine.connect() as conn:
                committed = audit.committed_recoveries(conn, winners)
                rows = {row.id: row for row in conn.execute(
                    sa.select(table.c.id, table.c.status, table.c.error, table.c.completed_at)
                    .where(table.c.id.in_([r.execution_id for r in winners])))}
            return ReadBack(committed_ids=committed, rows=rows)
        except sa.exc.DBAPIError:
            if time.monotonic() >= deadline:
                return None
            time.sleep(pause)
