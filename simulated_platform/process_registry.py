"""One simulated agent's process registry: executions run as real OS processes.

Each execution is a child process in its own session and process group (so a terminate reaches
everything it spawned), started with ``posix_spawn`` and reaped through a pidfd watched by the
event loop: no thread and no SIGCHLD handler per child, which keeps 10,000 of them cheap.

An execution moves through the states Trinity's agent distinguishes::

    pending ──spawn_delay──> running ──exit──> exited ──unregister_delay──> completed ──window──> gone
                                                  └─terminate: already_finished─> draining ──drain_seconds──┘

``pending`` (accepted, not spawned) and ``completed`` (unregistered, kept for
``completed_window`` seconds) are what ``/api/executions/running`` reports in ``pending_ids`` and
``recently_completed_ids``; ``exited`` is Trinity's short gap between the process ending and the
runtime unregistering it, where ``/status`` says ``running: false``, terminate answers
``already_finished`` and the id is listed as recently completed too (Trinity #2433). That
terminate drops the entry, and the handler unregisters it only when it has drained: while
``draining`` the id is in none of the three lists. A terminate of a pending run answers
``terminated`` and keeps it pending; it is killed the moment it would spawn (cancelled before start).

Completion callbacks fire on unregister. ``retain_delay`` later the run's terminal envelope is
retained (:mod:`exec_watchdog.simulated_platform.retained_results`) if it was started synchronously and its
handler saw it end: for that moment the id is recently completed while ``/result`` has nothing.
An agent restart (:meth:`wipe`) kills everything and reports and retains nothing, which is how a
platform loses track of an execution; results retained before it stay, as on Trinity's disk.

Process kinds: ``sleep`` (the default) runs the coreutils ``sleep`` binary, about 0.1 MB of
private memory per execution (10,000 of them take about 2.5 GB with kernel overhead), with a tiny
``sh`` wrapper when the exit code is not 0; ``python`` runs :mod:`exec_watchdog.simulated_platform.work`, a real
Python program (about 10 MB each). Each running execution holds one pidfd: 10,000 of them need
``ulimit -n`` above 10,000.
All methods must be called from the event loop that started the first execution.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import inspect
import json
import math
import os
import re
import shutil
import signal
import sys
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import structlog

from exec_watchdog.simulated_platform.retained_results import (
    LOG_MAX_BYTES,
    MAX_RECORDS,
    TTL_SECONDS,
    RetainedResult,
    RetainedResults,
    cancelled,
    failed_envelope,
    success_envelope,
)

log = structlog.get_logger(__name__)

ProcessKind = Literal["sleep", "python"]
State = Literal["pending", "running", "exited", "draining", "completed"]
CompletionCallback = Callable[[str, int], Awaitable[None] | None]

EXECUTION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MAX_SECONDS = 10_000_000.0
SPAWN_FAILED = 127  # the shell's "could not execute" status
_WORKER = str(Path(__file__).with_name("work.py"))
_STDIO_TO_DEVNULL = [
    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
    (os.POSIX_SPAWN_DUP2, 1, 2),
]
# Python ignores SIGPIPE and may ignore others; a child must start with the defaults.
_DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ)


class ExecutionNotFound(LookupError):
    """The registry has no running or just-exited execution with this id."""


class DuplicateExecution(ValueError):
    """An execution with this id is already pending, running or recently completed."""


class TerminateFailed(RuntimeError):
    """Signals were sent but the process did not go away (the API answers 500)."""


@dataclass(frozen=True)
class RegistryConfig:
    """How one agent's registry behaves; every delay is in seconds."""

    kind: ProcessKind = "sleep"
    spawn_delay: float = 0.0  # > 0 leaves executions observable as pending
    grace_seconds: float = 5.0  # SIGINT → SIGKILL, as Trinity
    kill_wait_seconds: float = 2.0  # SIGKILL → give up (500), as Trinity
    completed_window: float = 300.0  # Trinity's RECENTLY_COMPLETED_TTL_SECONDS
    unregister_delay: float = 0.0  # > 0 makes the exited-but-registered gap observable
    drain_seconds: float = 1.0  # after terminate's already_finished, the id is in no list this long
    retain_delay: float = 0.0  # unregister -> retained record; > 0 widens the gap in which /result has nothing
    retained_ttl: float = TTL_SECONDS  # Trinity: 6 h
    retained_max: int = MAX_RECORDS  # Trinity: 50 files
    retained_log_max_bytes: int = LOG_MAX_BYTES

    def __post_init__(self) -> None:
        if self.kind not in ("sleep", "python"):
            raise ValueError(f"kind must be 'sleep' or 'python', got {self.kind!r}")
        for name in ("spawn_delay", "grace_seconds", "kill_wait_seconds", "completed_window", "unregister_delay",
                     "drain_seconds", "retain_delay", "retained_ttl"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("retained_max", "retained_log_max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class RunningExecution:
    """One entry of ``/api/executions/running``; ``started_at`` is a naive UTC ISO string."""

    execution_id: str
    pid: int
    started_at: str
    metadata: Mapping[str, Any]


@dataclass(frozen=True)
class ExecutionStatus:
    execution_id: str
    state: State
    pid: int | None
    started_at: str | None
    returncode: int | None
    metadata: Mapping[str, Any]


@dataclass(frozen=True)
class LastError:
    error_type: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class TerminateResult:
    status: Literal["terminated", "already_finished"]
    returncode: int | None


@dataclass(frozen=True)
class RunResult:
    """What a run hands back when it succeeds, and whether anyone waits for it (only then retained)."""

    synchronous: bool = True  # Trinity retains /api/task and /api/chat turns, not async dispatches
    response: str | None = None  # default: a line naming the run
    cost_usd: float = 0.0


@dataclass(slots=True, eq=False)
class _Run:
    execution_id: str
    argv: list[str]
    block_sigint: bool
    metadata: dict[str, Any]
    error: LastError | None
    result: RunResult
    state: State = "pending"
    pid: int = 0
    pidfd: int = -1
    started_at: str | None = None
    returncode: int | None = None
    terminated: bool = False  # a terminate reached it: its end is a cancel (Trinity's was_terminated)
    spawned_at: float = 0.0  # monotonic
    timer: asyncio.TimerHandle | None = None
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


def _which(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"the '{name}' binary is needed for kind='sleep' but is not on PATH")
    return found


def _naive_utc_now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat()


def _exit_error(returncode: int) -> LastError | None:
    if returncode == 0:
        return None
    if returncode > 0:
        return LastError("ProcessExited", f"process exited with code {returncode}")
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return LastError("ProcessKilled", f"process was killed by {name}")


class ProcessRegistry:
    """The executions one simulated agent is running, pending or has just finished."""

    def __init__(self, config: RegistryConfig | None = None) -> None:
        self.config = config or RegistryConfig()
        self._sleep = _which("sleep") if self.config.kind == "sleep" else ""
        self._sh = _which("sh") if self.config.kind == "sleep" else ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runs: dict[str, _Run] = {}  # pending, running and exited
        self.sigints: dict[str, int] = {}  # SIGINTs sent per execution: more than one is a double terminate
        self._completed: dict[str, tuple[float, int]] = {}  # id -> (monotonic end, returncode); oldest first
        self._retained = RetainedResults(self.config.retained_ttl, self.config.retained_max,
                                         self.config.retained_log_max_bytes)
        self._retaining: dict[str, asyncio.TimerHandle] = {}  # unregistered, record not written yet
        self._graveyard: dict[int, _Run] = {}  # killed by wipe(), still to be reaped silently
        self._callbacks: list[CompletionCallback] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._buried: asyncio.Event | None = None  # set when the graveyard empties
        self._closed = False
        _LIVE.add(self)

    # -- what the scheduler calls -------------------------------------------------------------

    def on_complete(self, callback: CompletionCallback) -> None:
        """Call ``callback(execution_id, returncode)`` (sync or async) when a run is unregistered."""
        self._callbacks.append(callback)

    async def start(self, execution_id: str, seconds: float, metadata: Mapping[str, Any] | None = None,
                    ignore_sigint: bool = False, exit_code: int = 0,
                    last_error: LastError | None = None, result: RunResult | None = None) -> None:
        """Accept an execution; it spawns now, or after ``spawn_delay`` (pending until then)."""
        loop = self._bind()
        if self._closed:
            raise RuntimeError("the registry is closed")
        if not isinstance(execution_id, str) or not EXECUTION_ID.fullmatch(execution_id):
            raise ValueError(f"execution_id must match {EXECUTION_ID.pattern}, got {execution_id!r}")
        if execution_id in self._runs or execution_id in self._completed:
            raise DuplicateExecution(f"execution {execution_id!r} already exists on this agent")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
                or not math.isfinite(seconds) or not 0 <= seconds <= MAX_SECONDS:
            raise ValueError(f"seconds must be a number between 0 and {MAX_SECONDS:g}, got {seconds!r}")
        if isinstance(exit_code, bool) or not isinstance(exit_code, int) or not 0 <= exit_code <= 255:
            raise ValueError(f"exit_code must be an integer between 0 and 255, got {exit_code!r}")
        meta = dict(metadata or {})
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metadata must be JSON-serialisable: {exc}") from None
        result = result or RunResult()
        if isinstance(result.cost_usd, bool) or not isinstance(result.cost_usd, int | float) \
                or not math.isfinite(result.cost_usd) or result.cost_usd < 0:
            raise ValueError(f"cost_usd must be a finite number >= 0, got {result.cost_usd!r}")
        argv = self._argv(float(seconds), bool(ignore_sigint), exit_code)
        run = _Run(execution_id, argv, bool(ignore_sigint), meta, last_error, result)
        self._runs[execution_id] = run
        if self.config.spawn_delay > 0:
            run.timer = loop.call_later(self.config.spawn_delay, self._spawn, run)
        else:
            self._spawn(run)

    def running(self) -> list[RunningExecution]:
        return [RunningExecution(r.execution_id, r.pid, r.started_at or "", r.metadata)
                for r in self._runs.values() if r.state == "running"]

    def pending_ids(self) -> list[str]:
        return [r.execution_id for r in self._runs.values() if r.state == "pending"]

    def recently_completed_ids(self) -> list[str]:
        """Unregistered within the window, and exited but not unregistered yet (Trinity #2433)."""
        self._prune()
        return [*self._completed, *(r.execution_id for r in self._runs.values() if r.state == "exited")]

    def retained(self, execution_id: str) -> RetainedResult | None:
        """The run's retained terminal, or None (none yet, never, expired, evicted)."""
        return self._retained.get(execution_id)

    def status(self, execution_id: str) -> ExecutionStatus | None:
        """Everything known about one execution, including pending and completed ones."""
        run = self._runs.get(execution_id)
        if run is not None:
            return ExecutionStatus(execution_id, run.state, run.pid or None, run.started_at,
                                   run.returncode, run.metadata)
        self._prune()
        if execution_id in self._completed:
            return ExecutionStatus(execution_id, "completed", None, None, self._completed[execution_id][1], {})
        return None

    def last_error(self, execution_id: str) -> LastError | None:
        """The run's last error (fields None if none); None when pending or unregistered (its log
        buffer goes at unregister, as Trinity's does)."""
        run = self._runs.get(execution_id)
        if run is None or run.state == "pending":
            return None
        return run.error or LastError()

    async def terminate(self, execution_id: str) -> TerminateResult:
        """SIGINT to the process group, ``grace_seconds``, SIGKILL, ``kill_wait_seconds``."""
        run = self._runs.get(execution_id)
        if run is None or run.state == "draining":
            raise ExecutionNotFound(execution_id)
        if run.state == "pending":  # kept pending, killed at spawn: cancelled before start
            run.terminated = True
            return TerminateResult("terminated", None)
        if run.state == "exited":
            self._drain(run)
            return TerminateResult("already_finished", run.returncode)
        run.terminated = True
        for sig, wait in ((signal.SIGINT, self.config.grace_seconds),
                          (signal.SIGKILL, self.config.kill_wait_seconds)):
            if run.state == "running":
                if sig == signal.SIGINT:
                    self.sigints[execution_id] = self.sigints.get(execution_id, 0) + 1
                try:
                    os.killpg(run.pid, sig)  # safe: the leader is unreaped, so its pid is not reused
                except ProcessLookupError:
                    pass
                except OSError as exc:
                    raise TerminateFailed(f"could not signal process group {run.pid}: {exc}") from exc
            if await self._wait_exit(run, wait):
                log.info("execution_terminated", execution_id=execution_id, signal=sig.name,
                         returncode=run.returncode)
                return TerminateResult("terminated", run.returncode)
        raise TerminateFailed(f"process {run.pid} did not exit after SIGKILL")

    def wipe(self) -> None:
        """Simulate an agent restart: SIGKILL every process and forget every execution, unreported."""
        for run in self._runs.values():
            if run.timer is not None:
                run.timer.cancel()
            if run.state == "running":
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.pid, signal.SIGKILL)
                self._graveyard[run.pid] = run
            self._wake(run)
        for handle in self._retaining.values():
            handle.cancel()  # the handler died with the agent server: nothing is retained
        self._runs.clear()
        self._completed.clear()
        self._retaining.clear()

    async def aclose(self, timeout: float = 5.0) -> None:
        """Wipe, refuse new work, and wait until every killed process has been reaped."""
        self._closed = True
        self.wipe()
        if self._graveyard:
            self._buried = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._buried.wait(), timeout)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- internals ----------------------------------------------------------------------------

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("a ProcessRegistry is bound to the event loop that first used it")
        return loop

    def _argv(self, seconds: float, ignore_sigint: bool, exit_code: int) -> list[str]:
        # SIGINT is "ignored" by spawning with it blocked: a blocked signal never arrives, and unlike
        # a handler installed at startup there is no window in which it still kills the process.
        # dash unblocks signals when it starts, so that case uses the Python worker.
        if self.config.kind == "python" or (ignore_sigint and exit_code != 0):
            argv = [sys.executable, _WORKER, "--seconds", repr(seconds), "--exit-code", str(exit_code)]
            return [*argv, "--ignore-sigint"] if ignore_sigint else argv
        if exit_code == 0:
            return [self._sleep, repr(seconds)]
        return [self._sh, "-c", '"$0" "$1"; exit "$2"', self._sleep, repr(seconds), str(exit_code)]

    def _spawn(self, run: _Run) -> None:
        run.timer = None
        assert self._loop is not None
        if run.terminated:
            self._exited(run, -signal.SIGKILL, LastError("ProcessKilled", "cancelled before start"))
            return
        try:
            run.pid = os.posix_spawn(run.argv[0], run.argv, os.environ, file_actions=_STDIO_TO_DEVNULL,
                                     setsid=True, setsigdef=_DEFAULT_SIGNALS,
                                     setsigmask=(signal.SIGINT,) if run.block_sigint else ())
        except OSError as exc:
            self._spawn_failed(run, exc)
            return
        try:
            run.pidfd = os.pidfd_open(run.pid)
        except OSError as exc:  # e.g. out of file descriptors: do not leave an unwatched child
            os.killpg(run.pid, signal.SIGKILL)
            os.waitpid(run.pid, 0)
            self._spawn_failed(run, exc)
            return
        run.state = "running"
        run.started_at = _naive_utc_now()
        run.spawned_at = time.monotonic()
        self._loop.add_reader(run.pidfd, self._reap, run)

    def _spawn_failed(self, run: _Run, exc: OSError) -> None:
        log.warning("execution_spawn_failed", execution_id=run.execution_id, error=str(exc))
        run.pid = 0
        self._exited(run, SPAWN_FAILED, LastError("SpawnError", f"could not start the process: {exc}"))

    def _reap(self, run: _Run) -> None:
        try:
            pid, status = os.waitpid(run.pid, os.WNOHANG)
        except ChildProcessError:  # someone else reaped it: the status is lost
            pid, status = run.pid, -1
        if pid == 0:
            return
        assert self._loop is not None
        self._loop.remove_reader(run.pidfd)
        os.close(run.pidfd)
        run.pidfd = -1
        returncode = os.waitstatus_to_exitcode(status) if status != -1 else 255
        if self._graveyard.pop(run.pid, None) is not None:
            run.state, run.returncode = "exited", returncode
            if not self._graveyard and self._buried is not None:
                self._buried.set()
            return  # killed by wipe(): the restarted agent knows nothing of it
        self._exited(run, returncode, _exit_error(returncode))

    def _exited(self, run: _Run, returncode: int, error: LastError | None) -> None:
        run.state, run.returncode = "exited", returncode
        run.error = run.error or error
        self._wake(run)
        if self.config.unregister_delay > 0 and self._loop is not None:
            run.timer = self._loop.call_later(self.config.unregister_delay, self._unregister, run)
        else:
            self._unregister(run)

    def _drain(self, run: _Run) -> None:
        """Terminate dropped the exited entry: the handler unregisters it once it has drained."""
        assert self._loop is not None
        if run.timer is not None:
            run.timer.cancel()
        run.state = "draining"
        run.timer = self._loop.call_later(self.config.drain_seconds, self._unregister, run)

    def _unregister(self, run: _Run) -> None:
        run.timer = None
        if self._runs.get(run.execution_id) is not run:
            return
        del self._runs[run.execution_id]
        returncode = run.returncode if run.returncode is not None else SPAWN_FAILED
        self._completed[run.execution_id] = (time.monotonic(), returncode)
        self._prune()
        envelope = self._envelope(run, returncode)
        if envelope is not None and self._loop is not None:
            # Always a later turn of the loop: the record lands just after the unregister.
            self._retaining[run.execution_id] = self._loop.call_later(
                self.config.retain_delay, self._retain, run.execution_id, envelope)
        for callback in self._callbacks:
            try:
                result = callback(run.execution_id, returncode)
            except Exception:
                log.exception("completion_callback_failed", execution_id=run.execution_id)
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._callback_done)

    def _envelope(self, run: _Run, returncode: int) -> dict[str, Any] | None:
        """The terminal the run's handler returns, as Trinity's task handler retains it."""
        if not run.result.synchronous:
            return None
        if returncode == 0:
            response = run.result.response or f"simulated run {run.execution_id} finished"
            elapsed = time.monotonic() - run.spawned_at if run.spawned_at else 0.0
            metadata = {"cost_usd": run.result.cost_usd, "session_id": str(uuid.uuid4()),
                        "duration_ms": int(elapsed * 1000), "num_turns": 1}
            log_entry = {"type": "result", "subtype": "success", "result": response}
            envelope = success_envelope(response, [log_entry], metadata)
        else:
            error = run.error or LastError()
            envelope = failed_envelope(error.error_type, error.error_message or f"exit code {returncode}")
        return cancelled(envelope) if run.terminated else envelope

    def _retain(self, execution_id: str, envelope: dict[str, Any]) -> None:
        self._retaining.pop(execution_id, None)
        self._retained.record(execution_id, envelope)

    def _callback_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("completion_callback_failed", exc_info=task.exception())

    def _prune(self) -> None:
        cutoff = time.monotonic() - self.config.completed_window
        while self._completed:
            oldest = next(iter(self._completed))
            if self._completed[oldest][0] >= cutoff:
                break
            del self._completed[oldest]

    @staticmethod
    def _wake(run: _Run) -> None:
        for waiter in run.waiters:
            if not waiter.done():
                waiter.set_result(None)
        run.waiters.clear()

    async def _wait_exit(self, run: _Run, timeout: float) -> bool:
        if run.state != "running":
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        run.waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return False
        return True

    def _kill_all_now(self) -> None:
        for run in [*self._runs.values(), *self._graveyard.values()]:
            if run.state == "running":
                with contextlib.suppress(OSError):
                    os.killpg(run.pid, signal.SIGKILL)


# Processes must not outlive the program that simulates their agent, even if it never closed it.
_LIVE: weakref.WeakSet[ProcessRegistry] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for registry in list(_LIVE):
        registry._kill_all_now()
