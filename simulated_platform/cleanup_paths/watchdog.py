"""Phase 0, Trinity's watchdog: each agent's registry against its ``running`` rows.

Rows: ``running``, no lease, of an agent that is not soft-deleted. Each agent is asked once
(``GET /api/executions/running``); an agent that does not answer is skipped this cycle. Then,
per row, by what the agent said:

- **running or pending**: past its effective timeout → terminated on the agent, and only on a
  2xx failed with ``Execution auto-terminated after {minutes} minutes by watchdog (exceeded
  timeout of {seconds}s)``; otherwise confirmed alive (the slot phase leaves its slot's row);
- **recently completed**: never terminated; its retained result (``/result``) is claimed once it
  was retained at least 180 s ago; with no record yet, or a younger one, it waits;
- **unknown to the agent**: left while younger than 60 s (15 s in the start-up sweep); its
  in-flight marker alive → left, unreadable → left while younger than the in-flight bound;
  then the retained result: claimed (180 s), or a younger one waits; the coded 404 → failed
  with the orphan text ending ", no retained result"; an old image's bare 404 → failed with the
  orphan text; any other answer → left for the next cycle.

Before a failure ``/last-error`` is asked (2 s) and prefixes the text. A failure or a claim that
wins its compare-and-set closes the run's activity and releases its slot. Trinity also
announces each recovery on ``trinity:events``; this model does not (nobody listens in the
simulation, and the bench compares rows).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from exec_watchdog.common.contract import CLAIM_RESULT, FAIL_ORPHAN, TERMINATE_OVERDUE
from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access import inflight
from exec_watchdog.platform_access.agent_client import LastError, RunningSnapshot
from exec_watchdog.platform_access.claim_columns import claim_of
from exec_watchdog.platform_access.retained import NoRetainedResult, RetainedResult
from exec_watchdog.platform_access.texts import orphan_text, overdue_text, with_last_error
from exec_watchdog.simulated_platform.cleanup_paths.context import CleanupContext

MIN_AGE_SECONDS = 60.0  # Trinity's WATCHDOG_MIN_AGE_SECONDS
STARTUP_MIN_AGE_SECONDS = 15.0  # Trinity's STARTUP_RECOVERY_GRACE_SECONDS
LAST_ERROR_SECONDS = 2.0  # Trinity's ERROR_FETCH_TIMEOUT


@dataclass
class WatchdogReport:
    ended: int = 0
    confirmed_running: set[str] = field(default_factory=set)  # handed to the slot phase (Trinity #226)


async def sweep(ctx: CleanupContext, *, startup: bool = False) -> WatchdogReport:
    with ctx.engine.connect() as conn:
        rows, _ = db.running_executions(conn)
    by_agent: dict[str, list[db.Execution]] = defaultdict(list)
    for row in rows:
        by_agent[row.agent_name].append(row)
    report = WatchdogReport()
    for agent, agent_rows in sorted(by_agent.items()):
        answer = await ctx.agents.running(agent)
        if answer.answered:
            await _reconcile(ctx, agent, agent_rows, answer.unwrap(), report, startup)
    return report


async def _reconcile(ctx: CleanupContext, agent: str, rows: list[db.Execution], snapshot: RunningSnapshot,
                     report: WatchdogReport, startup: bool) -> None:
    alive = snapshot.running_ids | snapshot.pending_ids
    unknown = [r for r in rows if r.id not in alive and r.id not in snapshot.recently_completed_ids]
    verdicts = ctx.inflight.verdicts([r.id for r in unknown]) if unknown else {}
    min_age = STARTUP_MIN_AGE_SECONDS if startup else MIN_AGE_SECONDS
    for row in rows:
        now = ctx.now()
        age = row.runtime_seconds(now)
        if row.id in alive:
            report.confirmed_running.add(row.id)
            if age > row.timeout_seconds:
                report.ended += await _terminate(ctx, row, age)
        elif row.id in snapshot.recently_completed_ids:
            report.ended += await _claim_or_wait(ctx, row, recently_completed=True, snapshot=snapshot)
        elif age >= min_age and not inflight.withholds(verdicts.get(row.id, inflight.Verdict.UNKNOWN), age):
            report.ended += await _claim_or_wait(ctx, row, recently_completed=False, snapshot=snapshot)


async def _last_error(ctx: CleanupContext, row: db.Execution) -> LastError | None:
    try:
        answer = await asyncio.wait_for(ctx.agents.last_error(row.agent_name, row.id), LAST_ERROR_SECONDS)
    except TimeoutError:
        return None
    return answer.value if answer.answered else None


async def _terminate(ctx: CleanupContext, row: db.Execution, age: float) -> int:
    text = overdue_text(age, row.timeout_seconds)
    if not ctx.shadow:
        answer = await ctx.agents.terminate(row.agent_name, row.id)
        if not answer.answered:
            return 0  # only a 2xx counts as terminated: tried again next cycle
        text = with_last_error(text, await _last_error(ctx, row))
    return _fail(ctx, row, TERMINATE_OVERDUE, text)


async def _claim_or_wait(ctx: CleanupContext, row: db.Execution, *, recently_completed: bool,
                         snapshot: RunningSnapshot) -> int:
    answer = await ctx.agents.result(row.agent_name, row.id)
    now = ctx.now()
    if answer.answered and isinstance(answer.value, RetainedResult):
        if (now - answer.value.retained_at).total_seconds() < ctx.claim_defer_seconds:
            return 0
        return _claim(ctx, row, answer.value, now)
    missing = answer.kind == "not_found" or (answer.answered and isinstance(answer.value, NoRetainedResult))
    if recently_completed or not missing:
        return 0  # no record yet (or the agent could not be asked): wait
    text = orphan_text(row.agent_name, reports_pending=snapshot.reports_pending,
                       no_retained_result=answer.answered)
    if not ctx.shadow:
        text = with_last_error(text, await _last_error(ctx, row))
    return _fail(ctx, row, FAIL_ORPHAN, text)


def _fail(ctx: CleanupContext, row: db.Execution, action: str, text: str) -> int:
    won = ctx.fail(row, action, text, ctx.now(), text)
    if won:
        ctx.release_slot(row.agent_name, row.id)
    return int(won)


def _claim(ctx: CleanupContext, row: db.Execution, result: RetainedResult, now: datetime) -> int:
    claim = claim_of(result)

    def write(conn: sa.Connection) -> bool:
        if not db.claim_execution(conn, row, claim, now):
            return False
        ctx.close_one(conn, row.id, claim.status, claim.error, now)
        return True

    won = ctx.decide(row.id, row.agent_name, CLAIM_RESULT, f"claimed status={claim.status}", now, write)
    if won:
        ctx.release_slot(row.agent_name, row.id)
    return int(won)
