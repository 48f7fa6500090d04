"""A claim on acting on an execution, taken in the database before any side effect outside it.

The guarded ``running -> failed`` update makes the state change exactly-once, but a terminate
happens on the agent before that update: two replicas holding duplicate notifications would both
send SIGINT. Whoever holds the claim terminates; the others stand back. The rules:

- **Holders are replica processes.** A holder id is fixed for the life of one remediator process,
  so its own retry of a delivery that failed takes its claim back at once (:func:`take`); its
  deliveries are kept apart in memory (``Remediator``), not here.
- **A lease, renewed right before the terminate is sent.** :func:`confirm` pushes ``expires_at``
  (the database's clock) a lease ahead and stamps ``terminate_sent_at``; only after it succeeds is
  the request sent. The lease outlasts the agent call's deadline, so once it has lapsed no
  terminate of the old holder can still be on its way: a replica that died between claim and
  terminate, or whose release was lost with the database, blocks the others one lease at most.
- **Release on failure.** A delivery that ends in a retry gives the claim up at once
  (:func:`release`) but keeps ``terminate_sent_at``; a delivery that ended for good drops it
  (:func:`drop`).
- **An earlier attempt's kill is remembered.** Whoever takes over a claim whose
  ``terminate_sent_at`` is set learns that an earlier holder may have killed the run
  (``Held.predecessor_sent``): an ``already_finished`` or 404 answer then means that kill, and the
  transition that delivery could not make is made now, without a second SIGINT.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

import anyio.to_thread
import sqlalchemy as sa
import structlog
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
    sa.Column("terminate_sent_at", sa.Text),  # NULL until a holder was about to send the terminate
)

EXPIRED = "0000"  # sorts before every real timestamp
log = structlog.get_logger("exec_watchdog.remediator")


@dataclass(frozen=True, slots=True)
class Held:
    """The claim is ours. ``predecessor_sent``: an earlier holder may have terminated the run."""

    predecessor_sent: bool


def take(engine: sa.Engine, execution_id: str, holder: str, ttl_seconds: float) -> Held | None:
    """Hold the claim if it is free, lapsed or released, or already ``holder``'s; else None."""
    with engine.begin() as conn:
        now = database_now(conn)
        values = {"execution_id": execution_id, "holder": holder,
                  "expires_at": format_utc(now + timedelta(seconds=ttl_seconds))}
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        inserted = conn.execute(dialect.insert(action_claims).values(**values).on_conflict_do_nothing()
                                .returning(action_claims.c.execution_id)).first()
        if inserted is not None:
            return Held(predecessor_sent=False)
        taken_over = conn.execute(sa.update(action_claims).where(
            action_claims.c.execution_id == execution_id,
            sa.or_(action_claims.c.expires_at < format_utc(now), action_claims.c.holder == holder),
        ).values(holder=holder, expires_at=values["expires_at"])
            .returning(action_claims.c.terminate_sent_at)).first()
        return None if taken_over is None else Held(predecessor_sent=taken_over[0] is not None)


def confirm(engine: sa.Engine, execution_id: str, holder: str, ttl_seconds: float) -> bool:
    """Renew the lease and stamp the terminate as sent; False when the claim is no longer ours."""
    with engine.begin() as conn:
        now = database_now(conn)
        renewed = conn.execute(sa.update(action_claims).where(
            action_claims.c.execution_id == execution_id, action_claims.c.holder == holder,
        ).values(expires_at=format_utc(now + timedelta(seconds=ttl_seconds)), terminate_sent_at=format_utc(now)))
        return renewed.rowcount == 1


def release(engine: sa.Engine, execution_id: str, holder: str) -> None:
    """Give the claim up now (the delivery will be retried): anyone may take it over, and learns
    whether a terminate was sent."""
    with engine.begin() as conn:
        conn.execute(sa.update(action_claims).where(action_claims.c.execution_id == execution_id,
                                                    action_claims.c.holder == holder)
                     .values(expires_at=EXPIRED))


def drop(engine: sa.Engine, execution_id: str, holder: str) -> None:
    """Delete the claim: the delivery holding it ended for good (recovered, lost or skipped)."""
    with engine.begin() as conn:
        conn.execute(sa.delete(action_claims).where(action_claims.c.execution_id == execution_id,
                                                    action_claims.c.holder == holder))


class Keeper:
    """One remediator process's side of the claims: its holder id, the executions its deliveries
    hold right now (two deliveries here never act on one execution at once), and the releases the
    database refused (each later delivery and sweep tries them again)."""

    def __init__(self, engine: sa.Engine, replica: str, ttl_seconds: float) -> None:
        self.engine, self.ttl_seconds = engine, ttl_seconds
        self.holder = f"{replica}:{uuid.uuid4().hex[:12]}"
        self._held: set[str] = set()
        self._owed: dict[str, bool] = {}  # execution id -> its delivery ended for good (drop, not release)
        self._settling: set[str] = set()  # owed claims being released right now

    def enter(self, execution_id: str) -> str | None:
        """Mark the execution as this delivery's; None when done, else the outcome to decide."""
        if execution_id in self._settling:
            return "retry"
        if execution_id in self._held:
            return "lost_race"
        self._held.add(execution_id)
        return None

    def leave(self, execution_id: str) -> None:
        """The delivery will not settle the claim: it never took it in the database."""
        self._held.discard(execution_id)

    def take(self, execution_id: str) -> Held | None:
        return take(self.engine, execution_id, self.holder, self.ttl_seconds)

    def confirm(self, execution_id: str) -> bool:
        return confirm(self.engine, execution_id, self.holder, self.ttl_seconds)

    async def settle(self, execution_id: str, final: bool) -> None:
        """End of the delivery: drop the claim (ended for good) or release it (retried); what the
        database refuses now is owed."""
        try:
            await anyio.to_thread.run_sync(self._settle, execution_id, final)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("action_claim_release_owed", execution_id=execution_id, error_type=type(exc).__name__)
            self._owed[execution_id] = final
        finally:
            self._held.discard(execution_id)

    async def settle_owed(self) -> None:
        """Release the claims an outage kept us from releasing; a delivery for one of them arriving
        meanwhile is answered retry."""
        owed = {i: final for i, final in self._owed.items() if i not in self._held | self._settling}
        if not owed:
            return
        self._settling |= owed.keys()
        try:
            for execution_id, final in owed.items():
                await anyio.to_thread.run_sync(self._settle, execution_id, final)
                del self._owed[execution_id]
        except sa.exc.SQLAlchemyError as exc:
            log.info("action_claim_release_still_owed", count=len(self._owed), error_type=type(exc).__name__)
        finally:
            self._settling -= owed.keys()

    def _settle(self, execution_id: str, final: bool) -> None:
        (drop if final else release)(self.engine, execution_id, self.holder)
