"""A model of Trinity's own cleanup service, written from its rules, for the simulated platform.

Trinity's backend runs one cleanup cycle every 300 s, and once at start. In its order:

1. Phase 0, its watchdog (``cleanup_paths/watchdog.py``): orphans, overdue runs, retained results;
2. Phase 1, stale rows (``cleanup_paths/stale.py``), asking no agent;
3. Phase 1b, runs without a session (``cleanup_paths/no_session.py``);
4. Phase 1c, skipped rows never finalized (``cleanup_paths/skipped.py``);
5. the 120-minute activity backstop (``cleanup_paths/stale_activities.py``);
6. Phase 3, slots past their TTL (``cleanup_paths/slots.py``), given the runs Phase 0 saw alive;
   the start-up sweep also drops leaked slots.

Apart from the cycle, capacity maintenance expires the 24-hour backlog every 60 s
(``cleanup_paths/backlog.py``). Each path can be switched off (``paths``); ``activities`` off
leaves the runs' activities open after a recovery (the backstop path is separate).

``shadow=True`` decides exactly as above and changes nothing (no row, no activity, no slot, no
terminate): each decision goes to :attr:`PlatformCleanup.decisions` with the execution id, the
action in the shared vocabulary and the time, once per execution and action. Live, the same list
holds every write that won its compare-and-set. Texts and guards are Trinity's, including where it
is cruder than exec-watchdog (Phase 1 fails a run its agent may still be running; Phase 3 fails a
run on one unanswered call).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa

from exec_watchdog.platform_access.agent_client import AgentClient
from exec_watchdog.platform_access.inflight import InflightStore
from exec_watchdog.platform_access.slots import SlotStore
from exec_watchdog.simulated_platform.cleanup_paths import (
    backlog,
    no_session,
    skipped,
    slots,
    stale,
    stale_activities,
    watchdog,
)
from exec_watchdog.simulated_platform.cleanup_paths.context import CleanupContext, Decision

DEFAULT_INTERVAL_SECONDS = 300.0  # Trinity's CLEANUP_INTERVAL_SECONDS
PATHS = ("watchdog", "stale", "no_session", "skipped", "stale_activities", "slots", "backlog", "activities")
log = logging.getLogger(__name__)


def parse_paths(text: str) -> frozenset[str]:
    """``all`` or a comma-separated subset of :data:`PATHS`; a ValueError names what is wrong."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return frozenset(PATHS)
    unknown = sorted(set(names) - set(PATHS))
    if unknown or not names:
        raise ValueError(f"unknown cleanup path(s) {', '.join(unknown) or '(none given)'}: choose from "
                         f"{', '.join(PATHS)} or all")
    return frozenset(names)


@dataclass
class CycleReport:
    """How many rows each path ended in one cycle (or, in shadow, newly would have)."""

    ended: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.ended.values())


class PlatformCleanup:
    """Trinity's cleanup cycle over the simulated platform's database, slots and agents.

    The caller owns ``agents`` (an :class:`AgentClient` holding the backend's secret). Call
    :meth:`run_cycle` for one cycle, or :meth:`start` to run the start-up sweep and then a cycle
    every ``interval_seconds`` (and the backlog every 60 s) until :meth:`aclose`.
    """

    def __init__(self, engine: sa.Engine, slot_store: SlotStore, inflight: InflightStore, agents: AgentClient, *,
                 interval_seconds: float = DEFAULT_INTERVAL_SECONDS, paths: Iterable[str] = PATHS,
                 shadow: bool = False, backlog_interval_seconds: float = backlog.INTERVAL_SECONDS,
                 claim_defer_seconds: float = 180.0, on_decision: Callable[[Decision], None] | None = None) -> None:
        chosen = frozenset(paths)
        if chosen - set(PATHS):
            raise ValueError(f"unknown cleanup path(s): {', '.join(sorted(chosen - set(PATHS)))}")
        if interval_seconds <= 0 or backlog_interval_seconds <= 0:
            raise ValueError("cleanup intervals must be positive")
        self.paths = chosen
        self.interval_seconds = interval_seconds
        self.backlog_interval_seconds = backlog_interval_seconds
        self.shadow = shadow
        self.context = CleanupContext(engine, slot_store, inflight, agents, shadow=shadow,
                                      close_activities="activities" in chosen,
                                      claim_defer_seconds=claim_defer_seconds)
        if on_decision is not None:
            self.context.on_decision = on_decision
        self.cycles = 0
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def decisions(self) -> list[Decision]:
        return self.context.ledger.decisions

    async def run_cycle(self, *, startup: bool = False) -> CycleReport:
        """One cycle, in Trinity's order; the start-up sweep also drops leaked slots."""
        ctx, on = self.context, self.paths.__contains__
        report = CycleReport()
        confirmed: set[str] = set()
        if on("watchdog"):
            found = await watchdog.sweep(ctx, startup=startup)
            report.ended["watchdog"], confirmed = found.ended, found.confirmed_running
        for name, path in (("stale", stale.sweep), ("no_session", no_session.sweep), ("skipped", skipped.sweep),
                           ("stale_activities", stale_activities.sweep)):
            if on(name):
                report.ended[name] = path(ctx)
        if on("slots"):
            report.ended["slots"] = await slots.sweep_expired(ctx, confirmed)
            if startup:
                report.ended["leaked_slots"] = slots.sweep_leaked(ctx)
        if startup and on("backlog"):
            report.ended["backlog"] = backlog.sweep(ctx)
        self.cycles += 1
        return report

    def run_backlog(self) -> int:
        return backlog.sweep(self.context) if "backlog" in self.paths else 0

    def start(self, *, sweep_now: bool = True) -> None:
        """The start-up sweep now (unless the caller ran it: ``sweep_now=False``), then the cycle and
        the backlog on their own intervals."""
        self._tasks = [asyncio.create_task(self._loop(self._cycle, self.interval_seconds, first=sweep_now)),
                       asyncio.create_task(self._loop(self._backlog, self.backlog_interval_seconds, first=False))]

    async def _cycle(self, first: bool) -> None:
        await self.run_cycle(startup=first)

    async def _backlog(self, _first: bool) -> None:
        self.run_backlog()

    async def _loop(self, step: Callable[[bool], Awaitable[None]], interval: float, *, first: bool) -> None:
        if not first:
            await asyncio.sleep(interval)
        while True:
            try:
                await step(first)
            except Exception:  # one failed cycle never stops the service (as Trinity's sweeps)
                log.exception("platform cleanup cycle failed")
            first = False
            await asyncio.sleep(interval)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
