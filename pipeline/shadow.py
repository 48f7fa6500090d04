"""`exec-watchdog demo --shadow`: our remediator in shadow beside the platform's own cleanup, in charge.

The platform's cleanup is the simulated model of Trinity's (``simulated_platform/platform_cleanup.py``)
on a demo-sized cycle; the remediator gets ``--shadow`` with ``--shadow-their-cycle`` equal to that
cycle, so its comparison expects their writes on the cycle they really run. The account reads the
verdicts from the remediator's shadow table (the report's source), read-only.

The fast profile's bounds are seconds, while the model keeps Trinity's own (an orphan at least 60 s
old, a run without a session after 60 s): their margin here covers that minute, so a fault both
sides end reads ``agree``, not ``ours_only``. Bounds that differ by more (Trinity's 120 minutes for
a removed agent's runs, 24 hours for the backlog) still read ``ours_only`` unless the rows are
older than Trinity's bound too (the demo's cleanup faults are, in shadow).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from exec_watchdog.pipeline.platform import Platform
from exec_watchdog.platform_access.agent_client import AgentClient
from exec_watchdog.platform_access.inflight import open_inflight_store
from exec_watchdog.remediator import shadow_store
from exec_watchdog.simulated_platform.cleanup_paths.context import Decision
from exec_watchdog.simulated_platform.cleanup_paths.watchdog import MIN_AGE_SECONDS
from exec_watchdog.simulated_platform.platform_cleanup import PlatformCleanup

DEFAULT_CYCLE_SECONDS = 30.0  # the demo's; Trinity's is 300 s
COMPARE_EVERY_SECONDS = 2.0
THEIR_MARGIN_SECONDS = MIN_AGE_SECONDS + 15.0  # their 60 s minimum age against the fast profile's 3 s
OUR_GRACE_SECONDS = 60.0  # after their write, our alert (seconds in the fast profile) may still come


def remediator_flags(cycle_seconds: float) -> tuple[str, ...]:
    """The remediator's flags for shadow beside a cleanup cycling every ``cycle_seconds``."""
    return ("--shadow", "--shadow-interval", f"{COMPARE_EVERY_SECONDS:g}", "--shadow-their-cycle",
            f"{cycle_seconds:g}", "--shadow-their-margin", f"{THEIR_MARGIN_SECONDS:g}",
            "--shadow-our-grace", f"{OUR_GRACE_SECONDS:g}")


def platform_cleanup(platform: Platform, cycle_seconds: float,
                     on_decision: Callable[[Decision], None]) -> PlatformCleanup:
    """The platform's cleanup in charge (it writes), over the simulated platform's stores and agents.
    The caller starts it and, at the end, closes it and its agent client."""
    options = platform.options
    client = AgentClient(platform.url_template, options.agent_secret, timeout=15.0)  # Trinity's 15 s
    inflight = open_inflight_store(options.redis_url, platform.engine)
    return PlatformCleanup(platform.engine, platform.slots, inflight, client, interval_seconds=cycle_seconds,
                           on_decision=on_decision)


def read_verdicts(engine: sa.Engine, since: datetime | None = None) -> list[dict[str, Any]]:
    """Every verdict given so far, oldest first (the shadow report reads the same rows)."""
    if shadow_store.verdicts.name not in sa.inspect(engine).get_table_names():
        return []
    with engine.connect() as conn:
        return shadow_store.listed(conn, since)


async def poll_verdicts(engine: sa.Engine, on_verdicts: Callable[[list[dict[str, Any]]], None],
                        interval: float = 1.0) -> None:
    """Hand every verdict read to ``on_verdicts`` every ``interval`` seconds (it skips those it has seen)."""
    while True:
        with contextlib.suppress(sa.exc.SQLAlchemyError):  # a locked SQLite file: the next read catches up
            on_verdicts(await asyncio.to_thread(read_verdicts, engine))
        await asyncio.sleep(interval)
