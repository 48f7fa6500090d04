"""The demo's and the soak's faults for the paths Trinity's cleanup service owns (issue 22): a skipped
row never finalized, a queued row past the backlog age, an activity nobody closed, and an event
subscription so failed runs write ``agent_events`` rows.

Rows are back-dated just past the profile's bounds, so each path's recovery shows within seconds of
the injection in the fast profile (and within the production bounds' ``for`` in the other).
"""

from __future__ import annotations

import asyncio
import random

import structlog

from exec_watchdog.alerts.profiles import load_profile
from exec_watchdog.simulated_platform.scheduler import Scheduler

log = structlog.get_logger("exec_watchdog.simulate")


async def inject_cleanup_faults(scheduler: Scheduler, agents: list[str], profile: str, every_seconds: float,
                                duration_seconds: float, *, seed: int | None = None, first_after: float = 3.0) -> None:
    """Subscribe the second agent to the first one's failures, then every ``every_seconds`` add one of each
    fault on a random agent, until ``duration_seconds`` have passed."""
    if every_seconds <= 0 or not agents:
        return
    p = load_profile(profile)
    rng = random.Random(seed)
    if len(agents) > 1:
        await asyncio.to_thread(scheduler.subscribe, agents[1], agents[0])
    loop = asyncio.get_running_loop()
    end = loop.time() + duration_seconds
    await asyncio.sleep(first_after)
    while loop.time() < end:
        agent = rng.choice(agents)
        skipped = await asyncio.to_thread(scheduler.add_skipped, agent)
        queued = await asyncio.to_thread(scheduler.add_stale_queued, agent, p.backlog_max_age_seconds + 2)
        activity = await asyncio.to_thread(scheduler.add_stale_activity, agent, p.activity_stale_seconds + 2)
        log.info("cleanup_faults_injected", agent=agent, skipped=skipped, queued=queued, activity=activity)
        await asyncio.sleep(every_seconds)
