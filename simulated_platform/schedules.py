"""Schedules with distinct runtime distributions, so the timeout advice has something to say.

Four shapes, each with the timeout an operator might have set blind:

* ``fast``: runs of a few seconds under Trinity's default hour: far too loose;
* ``slow``: long, steady runs with a fitting timeout;
* ``heavy_tail``: mostly short runs with a long tail (log-normal): the p99, not the mean, decides;
* ``too_tight``: runs that come close to their timeout, and some that go past it and are
  auto-terminated by the watchdog (as ``hang`` runs: nobody reports a run past its timeout).

Two scales: :data:`DEMO` in seconds, for the live pipeline and the fast rule profile, and
:data:`PRODUCTION` in minutes to hours, for a month of history (``history_rows``: tests and
benchmarks write it straight into the table).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from exec_watchdog.platform_access.schema import agent_schedules
from exec_watchdog.platform_access.timestamps import format_utc
from exec_watchdog.simulated_platform.scheduler import Scheduler

Draw = Callable[[random.Random], float]


@dataclass(frozen=True)
class SimSchedule:
    name: str
    timeout_seconds: int
    every_seconds: float  # how often it starts (history), or its weight in a live workload
    draw: Draw  # one successful run's duration
    overrun_share: float = 0.0  # share of runs that go past the timeout (auto-terminated)

    def schedule_id(self, agent: str) -> str:
        return f"{self.name}-{agent}"

    def runs(self, rng: random.Random) -> tuple[float, bool]:
        """(seconds, overruns): one run's planned duration, and whether it runs past its timeout."""
        if rng.random() < self.overrun_share:
            return float("inf"), True
        return self.draw(rng), False


def _uniform(low: float, high: float) -> Draw:
    return lambda rng: rng.uniform(low, high)


def _gauss(mean: float, sd: float) -> Draw:
    return lambda rng: max(1.0, rng.gauss(mean, sd))


def _lognormal(median: float, sigma: float, cap: float) -> Draw:
    return lambda rng: min(cap, rng.lognormvariate(math.log(median), sigma))


DEMO: tuple[SimSchedule, ...] = (
    SimSchedule("fast", 3600, 1.0, _uniform(0.5, 2.0)),
    SimSchedule("slow", 120, 1.0, _uniform(20.0, 30.0)),
    SimSchedule("heavy_tail", 120, 1.0, _lognormal(2.0, 1.0, 60.0)),
    SimSchedule("too_tight", 12, 1.0, _uniform(7.0, 11.5), overrun_share=0.3),
)

PRODUCTION: tuple[SimSchedule, ...] = (
    SimSchedule("fast", 3600, 1800, _uniform(5, 25)),
    SimSchedule("slow", 3600, 3600, _gauss(1500, 150)),
    SimSchedule("heavy_tail", 1800, 1200, _lognormal(60, 1.0, 1700)),
    SimSchedule("too_tight", 600, 3600, _uniform(400, 590), overrun_share=0.25),
)


def auto_terminated_text(runtime_seconds: float, timeout_seconds: int) -> str:
    """What the watchdog writes on a run it terminated (Trinity's words)."""
    return (f"Execution auto-terminated after {int(runtime_seconds // 60)} minutes by watchdog "
            f"(exceeded timeout of {timeout_seconds}s)")


def history_rows(placed: Sequence[tuple[SimSchedule, str]], start: datetime, end: datetime,
                 seed: int = 15) -> Iterator[dict[str, Any]]:
    """Completed ``schedule_executions`` rows for each (schedule, agent), started in [start, end),
    in order of ``completed_at``: successes, a few failures and cancellations, and the overruns the
    watchdog auto-terminated (NULL ``duration_ms``, as Trinity's watchdog writes)."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for schedule, agent in placed:
        at = start + timedelta(seconds=rng.uniform(0, schedule.every_seconds))
        while at < end:
            seconds, overruns = schedule.runs(rng)
            roll = rng.random()
            row: dict[str, Any] = {"id": f"h-{len(rows):08d}", "schedule_id": schedule.schedule_id(agent),
                                   "agent_name": agent, "started_at": format_utc(at), "message": "scheduled run",
                                   "triggered_by": "schedule", "response": None, "error": None}
            if overruns:
                seconds = schedule.timeout_seconds + rng.uniform(1, 30)  # ended by the watchdog's next check
                row.update(status="failed", duration_ms=None,
                           error=auto_terminated_text(seconds, schedule.timeout_seconds))
            elif roll < 0.03:
                row.update(status="failed", duration_ms=int(seconds * 1000), error="exit code 1")
            elif roll < 0.04:
                row.update(status="cancelled", duration_ms=int(seconds * 1000))
            else:
                row.update(status="success", duration_ms=int(seconds * 1000), response="done")
            row["completed_at"] = format_utc(at + timedelta(seconds=seconds))
            rows.append(row)
            at += timedelta(seconds=schedule.every_seconds * rng.uniform(0.9, 1.1))
    rows.sort(key=lambda r: str(r["completed_at"]))
    yield from rows


def register(engine: sa.Engine, placed: Sequence[tuple[SimSchedule, str]]) -> None:
    """Write the schedules' ``agent_schedules`` rows (the agents must exist already)."""
    with engine.begin() as conn:
        for schedule, agent in placed:
            conn.execute(sa.insert(agent_schedules).values(
                id=schedule.schedule_id(agent), agent_name=agent, name=f"simulated {schedule.name}",
                timeout_seconds=schedule.timeout_seconds))


def place(schedules: Sequence[SimSchedule], agents: Sequence[str]) -> list[tuple[SimSchedule, str]]:
    """Each schedule on an agent of its own (round robin)."""
    return [(schedule, agents[i % len(agents)]) for i, schedule in enumerate(schedules)]


async def run_schedules(scheduler: Scheduler, placed: Sequence[tuple[SimSchedule, str]], duration_seconds: float,
                        *, every_seconds: float = 3.0, seed: int | None = None) -> None:
    """Start a run of every placed schedule every ``every_seconds`` (jittered) for ``duration_seconds``.

    Runs past their timeout start as ``hang`` runs: the watchdog's overdue alert ends them, and
    nobody reports them, as on a real platform.
    """
    rng = random.Random(seed)
    deadline = time.monotonic() + duration_seconds
    while time.monotonic() < deadline:
        for schedule, agent in placed:
            if scheduler.removed(agent):  # its container is gone: nothing is dispatched to it any more
                continue
            seconds, overruns = schedule.runs(rng)
            await scheduler.start(agent, 0.0 if overruns else seconds, "hang" if overruns else "none",
                                  schedule_id=schedule.schedule_id(agent), timeout_seconds=schedule.timeout_seconds)
        await asyncio.sleep(every_seconds * rng.uniform(0.8, 1.2))
