"""A claim on acting on an execution, taken in the database before any side effect outside it.

The guarded ``running -> failed`` update makes the state change exactly-once, but a terminate
happens on the agent before that update: two replicas holding duplicate notifications would both
send SIGINT. Whoever inserts the claim row first terminates; the other one stands back. A claim
expires (on the database's clock) so a replica that died mid-action does not block the next one.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from exec_watchdog.platform_access.database import database_now
from exec_watchdog.platform_access.timestamps import format_utc
from exec_watchdog.remediator.audit import audit_metadata

action_claims = sa.Table(
    "watchdog_action_claims",
    audit_metadata,
    sa.Column("execution_id", sa.Text, primary_key=True),
    sa.Column("holder", sa.Text, nullable=False),
    sa.Column("expires_at", sa.Text, nullable=False),
)


def take(engine: sa.Engine, execution_id: str, holder: str, ttl_seconds: float) -> bool:
    """True when ``holder`` now holds the claim (it was free or had expired)."""
    with engine.begin() as conn:
        now = database_now(conn)
        values = {"execution_id": execution_id, "holder": holder,
                  "expires_at": format_utc(now + timedelta(seconds=ttl_seconds))}
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        inserted = conn.execute(dialect.insert(action_claims).values(**values).on_conflict_do_nothing()
                                .returning(action_claims.c.execution_id)).first()
        if inserted is not None:
            return True
        taken_over = conn.execute(sa.update(action_claims).where(
            action_claims.c.execution_id == execution_id, action_claims.c.expires_at < format_utc(now),
        ).values(holder=holder, expires_at=values["expires_at"]))
        return taken_over.rowcount == 1


def release(engine: sa.Engine, execution_id: str, holder: str) -> None:
    """Give the claim up early (the action failed): the next attempt need not wait for expiry."""
    with engine.begin() as conn:
        conn.execute(sa.delete(action_claims).where(action_claims.c.execution_id == execution_id,
                                                    action_claims.c.holder == holder))
