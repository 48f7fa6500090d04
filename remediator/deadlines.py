"""Bounded waiting for agents: a slow agent may cost its own alerts a retry, never the others.

Each agent gets a few calls at a time (``per_agent``) out of a shared total; a call that cannot
get its turn within ``wait_seconds`` is given up (the alert is retried later) instead of queueing
behind a peer that trickles. The calls themselves carry an overall deadline in the agent client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from exec_watchdog.platform_access.agent_client import AgentResult, ResultKind

T = TypeVar("T")


class AgentBusy(Exception):
    """No turn to call this agent within the wait bound."""


class AgentGate:
    def __init__(self, total: int, per_agent: int, wait_seconds: float) -> None:
        if total < 1 or per_agent < 1 or wait_seconds <= 0:
            raise ValueError("agent gate needs total >= 1, per_agent >= 1 and a positive wait")
        self.per_agent = per_agent
        self.wait_seconds = wait_seconds
        self._total = asyncio.Semaphore(total)
        self._agents: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}  # semaphore, [users]

    def turn(self, agent: str) -> _Turn:
        """``async with gate.turn(agent):`` one call to ``agent``; :class:`AgentBusy` when no turn
        comes within ``wait_seconds``."""
        return _Turn(self, agent)

    async def call(self, agent: str, call: Coroutine[Any, Any, AgentResult[T]], *, busy_kind: ResultKind = "timeout",
                   busy_note: str = "") -> AgentResult[T]:
        """One agent request in its turn; no turn in time is an answer of ``busy_kind`` (the call is
        never sent): a slow agent waits for its own turns, not everyone's."""
        try:
            async with self.turn(agent):
                return await call
        except AgentBusy as exc:
            call.close()
            return AgentResult(busy_kind, detail=f"{busy_note}{exc}")
        except BaseException:
            call.close()  # cancelled while it waited for its turn: never started, never to be awaited
            raise

    async def _take(self, agent: str) -> asyncio.Semaphore:
        """The agent's semaphore, then a slot of the total, both within one wait bound. Free ones are
        taken without a timer: most turns never wait, and a mass orphaning takes thousands of them."""
        semaphore, users = self._agents.setdefault(agent, (asyncio.Semaphore(self.per_agent), [0]))
        users[0] += 1
        if not semaphore.locked() and not self._total.locked():
            await semaphore.acquire()  # neither suspends
            await self._total.acquire()
            return semaphore
        holds_agent = False
        try:
            async with asyncio.timeout(self.wait_seconds):
                await semaphore.acquire()
                holds_agent = True
                await self._total.acquire()
            return semaphore
        except BaseException as exc:
            if holds_agent:
                semaphore.release()
            self._leave(agent, users)
            if not isinstance(exc, TimeoutError):
                raise
            if holds_agent:
                raise AgentBusy(f"no free agent call slot within {self.wait_seconds:g} s") from None
            raise AgentBusy(f"{self.per_agent} calls to agent {agent!r} still running after "
                            f"{self.wait_seconds:g} s") from None

    def _give(self, agent: str, semaphore: asyncio.Semaphore) -> None:
        self._total.release()
        semaphore.release()
        self._leave(agent, self._agents[agent][1])

    def _leave(self, agent: str, users: list[int]) -> None:
        users[0] -= 1
        if users[0] == 0:
            del self._agents[agent]  # bounded by the agents in use, not every name ever seen


class _Turn:
    """One turn of an :class:`AgentGate`, as an async context manager (a class, not a generator:
    a mass orphaning takes thousands of turns)."""

    __slots__ = ("_agent", "_gate", "_semaphore")

    def __init__(self, gate: AgentGate, agent: str) -> None:
        self._gate, self._agent = gate, agent
        self._semaphore: asyncio.Semaphore | None = None

    async def __aenter__(self) -> None:
        self._semaphore = await self._gate._take(self._agent)

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._semaphore is not None
        self._gate._give(self._agent, self._semaphore)


class ProgressMonitor:
    """Deliveries in flight and how long the oldest has run: readiness turns 503 when one is
    stuck far past every deadline, i.e. the remediator cannot make progress."""

    def __init__(self) -> None:
        self._started: dict[int, float] = {}
        self._next = 0

    @contextlib.contextmanager
    def delivery(self) -> Iterator[None]:
        token = self._next
        self._next += 1
        self._started[token] = time.monotonic()
        try:
            yield
        finally:
            del self._started[token]

    @property
    def in_flight(self) -> int:
        return len(self._started)

    def oldest_seconds(self) -> float:
        return time.monotonic() - min(self._started.values()) if self._started else 0.0
