"""A stream of executions with a chosen mix of faults, for the `simulate` command and the demo."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from exec_watchdog.simulated_platform.scheduler import FAULTS, Fault, Scheduler

DEFAULT_MIX: dict[Fault, float] = {"lose_report": 0.1, "retained_success": 0.05, "hang": 0.05, "late_report": 0.1,
                                   "inflight": 0.05}


def agent_names(count: int) -> list[str]:
    """Names as Trinity's ``sanitize_agent_name`` can make them, every separator it allows in turn:
    ``agent-001``, ``agent_002``, ``agent.003``, ..."""
    return [f"agent{'-_.'[(i - 1) % 3]}{i:03d}" for i in range(1, count + 1)]


@dataclass(frozen=True)
class Workload:
    rate_per_second: float = 1.0
    duration_seconds: float = 60.0
    run_seconds: tuple[float, float] = (2.0, 6.0)
    mix: dict[Fault, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    agent_restart_every: float = 0.0  # seconds; 0 = never
    agent_outage_every: float = 0.0
    agent_outage_seconds: float = 10.0
    # Seconds after the start at which one agent is removed for good (0: never); a launch on it
    # then fails silently (a no_session run), so both of Trinity's sweeps have a run to end.
    agent_removal_at: float = 0.0
    partition_every: float = 0.0  # cut the watchdog off the whole fleet every N seconds (0: never)
    partition_seconds: float = 20.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.rate_per_second <= 0 or self.duration_seconds < 0:
            raise ValueError("rate must be positive and duration not negative")
        unknown = set(self.mix) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}: choose from {', '.join(FAULTS)}")
        if any(p < 0 for p in self.mix.values()) or sum(self.mix.values()) > 1:
            raise ValueError("fault shares must be >= 0 and add up to at most 1")
        low, high = self.run_seconds
        if not 0 <= low <= high:
            raise ValueError("run seconds must be 0 <= low <= high")
        if min(self.agent_removal_at, self.partition_every) < 0 or self.partition_seconds <= 0:
            raise ValueError("agent removal and partition times must not be negative")


def parse_mix(text: str) -> dict[Fault, float]:
    """``lose_report=0.2,hang=0.05`` -> {"lose_report": 0.2, "hang": 0.05}."""
    mix: dict[Fault, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name not in FAULTS or name == "none":
            raise ValueError(f"fault mix item {part!r} must be NAME=SHARE with NAME one of "
                             f"{', '.join(f for f in FAULTS if f != 'none')}")
        try:
            mix[name] = float(value)  # type: ignore[index,unused-ignore]
        except ValueError:
            raise ValueError(f"share in {part!r} is not a number") from None
    return mix


def pick_fault(rng: random.Random, mix: dict[Fault, float]) -> Fault:
    roll, total = rng.random(), 0.0
    for fault, share in mix.items():
        total += share
        if roll < total:
            return fault
    return "none"


async def run_workload(scheduler: Scheduler, workload: Workload) -> None:
    """Start executions at the given rate on random agents; inject agent faults on schedule."""
    rng = random.Random(workload.seed)
    agents = sorted(scheduler.agents.agents)
    start = time.monotonic()
    next_restart = start + workload.agent_restart_every if workload.agent_restart_every else float("inf")
    next_outage = start + workload.agent_outage_every if workload.agent_outage_every else float("inf")
    removal = start + workload.agent_removal_at if workload.agent_removal_at else float("inf")
    next_partition = start + workload.partition_every if workload.partition_every else float("inf")
    healing = float("inf")
    outages: list[tuple[float, str]] = []
    n = 0
    while (now := time.monotonic()) - start < workload.duration_seconds:
        if now >= next_restart:
            scheduler.restart_agent(rng.choice(agents))
            next_restart = now + workload.agent_restart_every
        if now >= next_outage and healing == float("inf"):
            victim = rng.choice([a for a in agents if a not in {o[1] for o in outages}] or agents)
            scheduler.stop_agent(victim)
            outages.append((now + workload.agent_outage_seconds, victim))
            next_outage = now + workload.agent_outage_every
        for until, agent in [o for o in outages if o[0] <= now]:
            scheduler.resume_agent(agent)
            outages.remove((until, agent))
        if now >= removal and len(agents) > 1:
            # The busiest agent: its running work dies with it, so the stale sweep has runs to end.
            candidates = [a for a in agents if a not in {o[1] for o in outages}] or agents
            gone = max(candidates, key=lambda a: len(scheduler.agents.registry(a).running()))
            scheduler.remove_agent(gone)
            agents.remove(gone)  # no more work for it, no outage or restart either
            await scheduler.start(gone, 0, "no_session")  # its launch fails silently
            removal = float("inf")
        if now >= next_partition:
            scheduler.partition()
            healing, next_partition = now + workload.partition_seconds, now + workload.partition_every
        if now >= healing:
            scheduler.heal()
            healing = float("inf")
        await scheduler.start(rng.choice(agents), rng.uniform(*workload.run_seconds),
                              pick_fault(rng, workload.mix))
        n += 1
        await asyncio.sleep(max(0.0, start + n / workload.rate_per_second - time.monotonic()))
    for _, agent in outages:
        scheduler.resume_agent(agent)
    if healing != float("inf"):
        scheduler.heal()
