"""The demo's and the soak's faults for the paths Trinity's cleanup service owns (issue 22): a skipped
row never finalized, a queued row past the backlog age, an activity nobody closed, and an event
subscription so failed runs write ``agent_events`` rows.

Rows are back-dated just past the profile's bounds, so each path's recovery shows within seconds of
the injection in the fast profile (and within the production bounds' ``for`` in the other). With
``past_platform_bounds`` (``demo --shadow``) they are back-dated past Trinity's own bounds as well
(24 hours, 120 minutes), so the platform's cleanup ends them too and the verdict can be ``agree``.
"""

from __future__ import annotations

import asyncio
import random

import structlog

from exec_watchdog.alerts.profiles import load_profile
from exec_watchdog.platform_access.activities import STALE_ACTIVITY_MINUTES
from exec_watchdog.platform_access.cleanup_rows import BACKLOG_MAX_AGE_SECONDS
from exec_watchdog.simulated_platform.scheduler import Scheduler

log = structlog.get_logger("exec_watchdog.simulate")


async def inject_cleanup_faults(scheduler: Scheduler, agents: list[str], profile: str, every_seconds: float,
                                duration_seconds: float, *, seed: int | None = None, first_after: float = 3.0,
                                past_platform_bounds: bool = False) -> None:
    """Subscribe the second agent to the first one's failures, then every ``every_seconds`` add one of each
    fault on a random agent, until ``duration_seconds`` have passed."""
    if every_seconds <= 0 or not agents:
        return
    p = load_profile(profile)
    rng = random.Random(seed)
    queued_age, activity_age = p.backlog_max_age_seconds + 2, p.activity_stale_seconds + 2
    if past_platform_bounds:
        queued_age = max(queued_age, BACKLOG_MAX_AGE_SECONDS + 2)
        activity_age = max(activity_age, STALE_ACTIVITY_MINUTES * 60 + 2)
    if len(agents) > 1:
        await asyncio.to_thread(scheduler.subscribe, agents[1], agents[0])
    loop = asyncio.get_running_loop()
    end = loop.time() + duration_seconds
    await asyncio.sleep(first_after)
    while loop.time() < end:
        agent = rng.choice(agents)
        skipped = await asyncio.to_thread(scheduler.add_skipped, agent)
        queued = await asyncio.to_thread(scheduler.add_stale_queued, agent, queued_age)
        activity = await asyncio.to_thread(scheduler.add_stale_activity, agent, activity_age)
        log.info("cleanup_faults_injected", agent=agent, skipped=skipped, queued=queued, activity=activity)
        await asyncio.sleep(every_seconds)
