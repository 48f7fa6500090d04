"""The slot phase (Phase 3 with the slot TTL) and the start-up sweep of leaked slots.

Skipped entirely while Redis holds ``governor:pause``. ``drain-…`` placeholders are never
touched. For every slot past its TTL (``platform_access/slot_expiry.py``), by its row:

- ``running`` (no lease) and not confirmed alive by this cycle's Phase 0: Trinity asks the agent
  (``GET /api/executions/running``), in this order —
  no answer of any kind → the row is failed at once with the #497 text (one unanswered call is
  enough for Trinity); the agent lists the run (running, pending, recently completed) → left;
  its in-flight marker alive or unreadable → left; otherwise the run is terminated best-effort
  and failed with the slot-TTL text. A failure closes the run's activity with the reclaim text;
- anything else (queued, pending_retry, a lease row, finished, missing) → the row is left.

The slot is removed in every case (ZREM + hash DEL), after the decision. At start only, a slot
acquired at least 15 s ago whose row is missing or finished is dropped as a leak.
"""

from __future__ import annotations

from collections.abc import Set

import sqlalchemy as sa

from exec_watchdog.common.contract import RECLAIM_EXPIRED_SLOT, RECLAIM_SLOT_UNREACHABLE, RELEASE_LEAKED_SLOT
from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access import slot_expiry
from exec_watchdog.platform_access.agent_client import AgentResult, RunningSnapshot
from exec_watchdog.platform_access.inflight import Verdict
from exec_watchdog.platform_access.schema import TERMINAL_STATUSES
from exec_watchdog.platform_access.slot_expiry import SlotEntry
from exec_watchdog.platform_access.texts import SLOT_RECLAIM_ACTIVITY_TEXT, slot_expired_text, slot_unreachable_text
from exec_watchdog.simulated_platform.cleanup_paths.context import CleanupContext


def _release(ctx: CleanupContext, entry: SlotEntry) -> None:
    ctx.release_slot(entry.agent, entry.execution_id)


def sweep_leaked(ctx: CleanupContext) -> int:
    """The start-up sweep: drop slots of missing or finished rows (never one younger than 15 s)."""
    if ctx.slots.paused():
        return 0
    entries = ctx.slots.entries()
    with ctx.engine.connect() as conn:
        rows = slot_expiry.slot_rows(conn, [e.execution_id for e in entries])
    now, epoch = ctx.now(), ctx.epoch()
    released = 0
    for entry in entries:
        status = slot_expiry.leaked_status(rows.get(entry.execution_id))
        if status is None or not slot_expiry.is_leaked(entry, rows.get(entry.execution_id), epoch):
            continue

        def write(_conn: sa.Connection, entry: SlotEntry = entry) -> bool:
            return ctx.slots.release(entry.agent, entry.execution_id)

        released += ctx.decide(entry.execution_id, entry.agent, RELEASE_LEAKED_SLOT, f"row {status}", now, write)
    return released


async def sweep_expired(ctx: CleanupContext, confirmed_running: Set[str]) -> int:
    """Phase 3: every slot past its TTL, as the module says; how many rows were ended (or would be)."""
    if ctx.slots.paused():
        return 0
    entries = ctx.slots.entries()
    with ctx.engine.connect() as conn:
        timeouts = slot_expiry.agent_timeouts(conn, {e.agent for e in entries})
        expired = [e for e in entries if slot_expiry.is_expired(e, timeouts, ctx.epoch())]
        rows = db.get_executions(conn, [e.execution_id for e in expired])
    answers: dict[str, AgentResult[RunningSnapshot]] = {}
    ended = 0
    for entry in expired:
        row = rows.get(entry.execution_id)
        if isinstance(row, db.Execution) and row.status == "running" and not row.leased \
                and entry.execution_id not in confirmed_running:
            if entry.agent not in answers:
                answers[entry.agent] = await ctx.agents.running(entry.agent)
            ended += await _reclaim(ctx, entry, row, answers[entry.agent])
        elif row is None or (isinstance(row, db.Execution) and row.status in TERMINAL_STATUSES):
            now = ctx.now()

            def write(_conn: sa.Connection, entry: SlotEntry = entry) -> bool:
                return ctx.slots.release(entry.agent, entry.execution_id)

            ctx.decide(entry.execution_id, entry.agent, RELEASE_LEAKED_SLOT,
                       f"row {'missing' if row is None else row.status}", now, write)
            continue
        _release(ctx, entry)
    return ended


async def _reclaim(ctx: CleanupContext, entry: SlotEntry, row: db.Execution,
                   answer: AgentResult[RunningSnapshot]) -> int:
    if not answer.answered:
        return _fail(ctx, row, RECLAIM_SLOT_UNREACHABLE, slot_unreachable_text(row.agent_name))
    snapshot = answer.unwrap()
    if row.id in snapshot.running_ids | snapshot.pending_ids | snapshot.recently_completed_ids:
        return 0
    if ctx.inflight.verdicts([row.id]).get(row.id, Verdict.UNKNOWN) is not Verdict.ABSENT:
        return 0
    if not ctx.shadow:
        await ctx.agents.terminate(row.agent_name, row.id)  # best effort: its answer never stops the failure
    return _fail(ctx, row, RECLAIM_EXPIRED_SLOT, slot_expired_text(row.agent_name))


def _fail(ctx: CleanupContext, row: db.Execution, action: str, text: str) -> int:
    return int(ctx.fail(row, action, text, ctx.now(), SLOT_RECLAIM_ACTIVITY_TEXT))
