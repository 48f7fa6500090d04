"""A mass orphaning shares the event loop: per-alert steps start a batch per loop turn, agent turns
keep their limits, and httpx's per-request log lines stay off (issue 26, bench/remediator.md).

No peers needed: these are the scheduling rules themselves, on a real event loop.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import pytest
import structlog

from exec_watchdog.common.contract import UNDECIDED, Outcome
from exec_watchdog.common.logs import configure_logging
from exec_watchdog.platform_access.agent_client import AgentResult
from exec_watchdog.remediator import isolation
from exec_watchdog.remediator.deadlines import AgentBusy, AgentGate
from exec_watchdog.remediator.payload import Alert, parse_notification
from exec_watchdog.testbed.notifications import alert, notification


@dataclass(eq=False)
class Subject:
    alert: Alert
    outcome: Outcome = UNDECIDED
    reason: str = ""

    def decide(self, outcome: Outcome, reason: str) -> None:
        self.outcome, self.reason = outcome, reason

    @property
    def undecided(self) -> bool:
        return self.outcome == UNDECIDED


def _subjects(count: int) -> list[Subject]:
    alerts = parse_notification(notification(*[alert(f"e{i}", "a1") for i in range(count)])).alerts
    return [Subject(a) for a in alerts]


async def test_each_lets_other_tasks_run_while_it_starts_thousands_of_steps() -> None:
    started: list[str] = []
    steps = 0

    async def step(v: Subject) -> None:
        nonlocal steps
        started.append("step")
        steps += 1
        if steps in (1, 700, 1999):
            raise RuntimeError("one alert's failure")
        await asyncio.sleep(0)

    async def probe() -> None:
        started.append("probe")

    subjects = _subjects(2000)
    asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(probe()))
    await isolation.each(subjects, step, "testing")
    assert started.count("step") == 2000 and "probe" in started
    assert started.index("probe") < 2 * isolation.START_EVERY  # not after all 2,000 first steps
    outcomes = [v.outcome for v in subjects]
    assert outcomes.count("retry") == 3 and outcomes.count(UNDECIDED) == 2000 - 3


async def test_each_cancelled_while_starting_cancels_what_it_started() -> None:
    running: set[int] = set()

    async def step(v: Subject) -> None:
        running.add(id(v))
        try:
            await asyncio.sleep(30)
        finally:
            running.discard(id(v))

    task = asyncio.ensure_future(isolation.each(_subjects(3 * isolation.START_EVERY), step, "testing"))
    for _ in range(3):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert running == set()


async def test_an_agent_turn_is_free_at_once_and_refused_after_the_wait_when_the_agent_is_busy() -> None:
    gate = AgentGate(total=10, per_agent=1, wait_seconds=0.1)
    async with gate.turn("a"):
        async with gate.turn("b"):  # another agent: its own limit
            pass
        loop = asyncio.get_running_loop()
        asked = loop.time()
        with pytest.raises(AgentBusy, match="1 calls to agent 'a'"):
            async with gate.turn("a"):
                pass
        assert 0.09 <= loop.time() - asked < 1.0
    async with gate.turn("a"):  # released: free again
        pass


async def test_a_full_total_is_refused_after_the_wait() -> None:
    gate = AgentGate(total=1, per_agent=4, wait_seconds=0.05)
    async with gate.turn("a"):
        with pytest.raises(AgentBusy, match="no free agent call slot"):
            async with gate.turn("b"):
                pass


async def test_one_wait_bound_covers_both_limits_and_a_refused_turn_leaves_nothing_taken() -> None:
    gate = AgentGate(total=1, per_agent=1, wait_seconds=0.1)
    loop = asyncio.get_running_loop()
    async with gate.turn("a"):
        # "b" gets its own agent's semaphore at once, then waits for the total, which never frees.
        asked = loop.time()
        with pytest.raises(AgentBusy, match="no free agent call slot"):
            async with gate.turn("b"):
                pass
        assert 0.09 <= loop.time() - asked < 0.5
        waiting = asyncio.ensure_future(gate.call("b", _answer("never sent")))
        await asyncio.sleep(0.02)
        waiting.cancel()  # cancelled while it waits for its turn
        with pytest.raises(asyncio.CancelledError):
            await waiting
    # Nothing of the refused or cancelled turns is still held: both take their turn at once.
    asked = loop.time()
    async with gate.turn("b"):
        pass
    assert (await gate.call("b", _answer("sent"))).detail == "sent"
    assert loop.time() - asked < 0.05


async def _answer(detail: str) -> AgentResult[None]:
    return AgentResult("answered", detail=detail)


@pytest.mark.parametrize(("level", "request_lines"), [("info", False), ("warning", False), ("debug", True)])
def test_httpx_request_lines_are_logged_at_debug_only(level: str, request_lines: bool) -> None:
    root, httpx_log = logging.getLogger(), logging.getLogger("httpx")
    handlers, root_level, httpx_level = root.handlers[:], root.level, httpx_log.level
    try:
        configure_logging(level, "json")
        assert httpx_log.isEnabledFor(logging.INFO) is request_lines
        assert httpx_log.isEnabledFor(logging.WARNING)
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(root_level)
        httpx_log.setLevel(httpx_level)
