"""One alert's failure is that alert's retry: never its notification's 500, never its neighbours'.

Every step the remediator takes for one alert (verify the row, ask the agent, terminate, read
``/last-error``, write the transition) runs inside :func:`alone` or :func:`each`: whatever it raises
(a driver's ``UnicodeEncodeError``, a ``RecursionError`` from an agent's answer, a bug) is logged
with its traceback, and that alert alone is decided ``retry`` (Alertmanager delivers again); the
other alerts of the notification go on. The reason names the step and the exception type only:
the exception's text may quote what an agent sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Protocol, TypeVar

import structlog

from exec_watchdog.common.contract import Outcome
from exec_watchdog.remediator.payload import Alert

log = structlog.get_logger("exec_watchdog.remediator")


class Decidable(Protocol):
    alert: Alert

    def decide(self, outcome: Outcome, reason: str) -> None: ...

    @property
    def undecided(self) -> bool: ...


V = TypeVar("V", bound=Decidable)


def failed_alone(v: Decidable, step: str, exc: BaseException) -> None:
    """Record ``exc`` as ``v``'s retry (if ``v`` is still undecided) and log it with its traceback."""
    log.error("alert_step_failed", step=step, execution_id=v.alert.execution_id[:200], agent=v.alert.agent[:200],
              error_type=type(exc).__name__, exc_info=exc)
    if v.undecided:
        v.decide("retry", f"{step} failed ({type(exc).__name__}): this alert is retried, the rest of its "
                          "notification went on")


@contextlib.contextmanager
def alone(v: Decidable, step: str) -> Iterator[None]:
    """A synchronous step for one alert: an exception is that alert's retry."""
    try:
        yield
    except Exception as exc:
        failed_alone(v, step, exc)


async def each(verdicts: Iterable[V], step: Callable[[V], Awaitable[object]], name: str) -> None:
    """``step`` for every verdict at once; an exception is that verdict's retry."""
    async def one(v: V) -> None:
        try:
            await step(v)
        except Exception as exc:
            failed_alone(v, name, exc)

    # Started a batch at a time: each task's first steps run in the loop turn after it is made, and
    # ten thousand of them in one turn would hold /healthz (and every other delivery) for half a second.
    tasks: list[asyncio.Task[None]] = []
    try:
        for index, v in enumerate(verdicts):
            if index and index % START_EVERY == 0:
                await asyncio.sleep(0)
            tasks.append(asyncio.create_task(one(v)))
    except BaseException:  # cancelled while starting: those started go with it
        for task in tasks:
            task.cancel()
        raise
    await asyncio.gather(*tasks)


START_EVERY = 250  # tasks started per event-loop turn


@contextlib.contextmanager
def together(verdicts: Iterable[Decidable], step: str) -> Iterator[None]:
    """A step batched over several alerts (one shared read): an exception is the retry of those alerts
    only, never of the rest of the notification."""
    try:
        yield
    except Exception as exc:
        for v in verdicts:
            failed_alone(v, step, exc)
