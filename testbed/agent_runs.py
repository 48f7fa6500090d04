"""Runs on the simulated agents, set up the way the tests need them."""

from __future__ import annotations

import asyncio
import time

from exec_watchdog.simulated_platform.process_registry import ProcessRegistry, RunResult


async def retained_then_forgotten(registry: ProcessRegistry, execution_id: str, result: RunResult,
                                  timeout: float = 10.0) -> None:
    """The run ends on its agent, which keeps its result; then the agent restarts, so only the
    retained result is left (the report of the run was lost)."""
    await registry.start(execution_id, 0, result=result)
    deadline = time.monotonic() + timeout
    while registry.retained(execution_id) is None:
        assert time.monotonic() < deadline, f"{execution_id} was not retained within {timeout:g} s"
        await asyncio.sleep(0.02)
    registry.wipe()
