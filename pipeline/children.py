"""Child processes of the pipeline: start, wait until ready, notice a crash, always stop.

Each child runs in its own session (so its whole process group can be signalled, and a Ctrl-C
in the terminal reaches only us: we decide the order of shutdown), writes its stdout and stderr
to a file in the work directory, and is asked to be ready through one HTTP URL. When the parent
dies without cleaning up (SIGKILL), ``setpriv --pdeathsig`` makes the kernel kill the child too.

Every started child is remembered until stopped, and an ``atexit`` hook stops the ones left, so an
exception anywhere between start and stop still leaves no process and no port behind.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

INSTALL_HINT = "apt-get install --no-install-recommends prometheus prometheus-alertmanager"
_LIVE: set[Child] = set()
_LIVE_LOCK = threading.Lock()


class MissingBinary(RuntimeError):
    """A program the pipeline needs is not installed; the message says what to install."""


class ChildCrashed(RuntimeError):
    """A child exited while it should be running."""

    def __init__(self, name: str, returncode: int | None, tail: list[str], log_path: Path) -> None:
        self.name, self.returncode, self.tail, self.log_path = name, returncode, tail, log_path
        lines = "\n".join(f"    {line}" for line in tail) or "    (no output)"
        super().__init__(f"{name} exited with code {returncode}; last lines of {log_path}:\n{lines}")


class NotReady(TimeoutError):
    """A child is running but did not become ready in time."""


def find_binary(*names: str) -> str:
    """The first of ``names`` on PATH, or :class:`MissingBinary` saying what to install."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise MissingBinary(f"{' or '.join(names)} is not installed: the pipeline runs real Prometheus and "
                        f"Alertmanager. Install them with: {INSTALL_HINT}")


def free_port() -> int:
    """A port nothing listens on right now (127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass(eq=False)
class Child:
    """One child process. ``ready`` is called (after the process is up) until it returns True."""

    name: str
    argv: list[str]
    log_path: Path
    ready: Callable[[], bool]
    cwd: Path | None = None
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError(f"{self.name} is already started")
        argv = list(self.argv)
        # The kernel delivers the parent-death signal when the *thread* that forked exits, so only
        # ask for it from the main thread, which lives as long as we do.
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            cwd=self.cwd, env=self.env, start_new_session=True)
        with _LIVE_LOCK:
            _LIVE.add(self)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def returncode(self) -> int | None:
        return self.process.poll() if self.process else None

    def check(self) -> None:
        """Raise :class:`ChildCrashed` if the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise ChildCrashed(self.name, self.process.returncode, self.tail(), self.log_path)

    def tail(self, lines: int = 12) -> list[str]:
        try:
            text = self.log_path.read_bytes()[-16384:].decode("utf-8", "replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line.strip()][-lines:]

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, then SIGKILL what is left; returns the exit code."""
        process = self.process
        if process is None:
            return None
        try:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                # Signal the group even after the leader exited: nothing it spawned may survive it.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(wait)
                    break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(self)
        return process.poll()


class Children:
    """Children started together and stopped in reverse order."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    def add(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def start_all(self) -> None:
        try:
            for child in self.children:
                child.start()
        except BaseException:
            self.stop_all()
            raise

    def check(self) -> None:
        for child in self.children:
            child.check()

    def crashed(self) -> ChildCrashed | None:
        for child in self.children:
            try:
                child.check()
            except ChildCrashed as exc:
                return exc
        return None

    def wait_ready(self, timeout: float = 60.0, extra: Sequence[tuple[str, Callable[[], bool]]] = ()) -> None:
        """Block until every child's ``ready`` and every ``extra`` check passes; a crash raises at once."""
        deadline = time.monotonic() + timeout
        waiting: list[tuple[str, Callable[[], bool]]] = [(c.name, c.ready) for c in self.children]
        waiting += list(extra)
        while waiting:
            self.check()
            waiting = [(name, ready) for name, ready in waiting if not ready()]
            if not waiting:
                return
            if time.monotonic() > deadline:
                names = ", ".join(name for name, _ in waiting)
                logs = "; ".join(f"{c.name}: {c.log_path}" for c in self.children)
                raise NotReady(f"not ready after {timeout:g} s: {names} (logs: {logs})")
            time.sleep(0.1)

    def stop_all(self) -> None:
        errors = []
        for child in reversed(self.children):
            try:
                child.stop()
            except Exception as exc:  # stop the others whatever happens to one
                errors.append(exc)
        if errors:
            raise errors[0]


@atexit.register
def _stop_leftovers() -> None:
    with _LIVE_LOCK:
        left = list(_LIVE)
    for child in left:
        with contextlib.suppress(Exception):
            child.stop(timeout=3.0)
