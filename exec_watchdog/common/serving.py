"""What the two HTTP apps (exporter, remediator) share about serving: where to listen, the agent
secret, and the resources their lifespan opens.

Both read ``--listen`` and the agent secret the same way, so a setting that works for one works
for the other, and a mistake gets the same message from both.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from exec_watchdog.common.flags import ConfigError, read_secret_file

R = TypeVar("R")
# Allocations between two collections of the youngest generation (CPython's default: 700). A mass
# orphaning makes hundreds of thousands of short-lived objects, and each collection also walks
# everything younger that is still alive (a whole notification's verdicts): with the default, the
# collector took 8 % of the remediator's CPU (bench/remediator.md).
FIRST_GENERATION_THRESHOLD = 10_000


def parse_listen(value: str, example: str = "127.0.0.1:9463") -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; the host must be an IP address or ``localhost``.

    Host names are refused: one that resolves to several addresses, or to a public one, would
    listen somewhere nobody meant to.
    """
    host, sep, port_text = value.strip().rpartition(":")
    if not sep or not host:
        raise ConfigError(f"--listen {value!r} must be HOST:PORT, e.g. {example}")
    host = host.removeprefix("[").removesuffix("]")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"--listen {value!r}: {host!r} is not an IP address (use e.g. 127.0.0.1)") from None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"--listen {value!r}: port must be a number from 1 to 65535")
    return host, int(port_text)


def bind_listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, before the server starts: a busy port is a clear start-up error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"--listen {host}:{port}: cannot listen there ({exc.strerror})") from None
    sock.set_inheritable(True)
    return sock


def read_agent_secret(value: str | None, path: str | None) -> str:
    """The backend's AGENT_AUTH_SECRET, from ``--agent-secret-file`` or ``--agent-secret``.

    Exactly one of the two: when both are set (a flag and a forgotten environment variable, say)
    it is unclear which one is stale, so neither is guessed at.
    """
    value = (value or "").strip()
    if path and value:
        raise ConfigError("both --agent-secret and --agent-secret-file are set (flags or EXEC_WATCHDOG_AGENT_SECRET"
                          "[_FILE]): keep one, preferably the file")
    if path:
        return read_secret_file(path, "--agent-secret-file")
    if not value:
        raise ConfigError("no agent secret: pass --agent-secret-file PATH (or set EXEC_WATCHDOG_AGENT_SECRET) "
                          "holding the backend's AGENT_AUTH_SECRET (X-Trinity-Agent-Token is derived from it)")
    return value


def lifespan(open_resources: Callable[[], AbstractAsyncContextManager[R]]) -> Callable[
        [Any], AbstractAsyncContextManager[None]]:
    """A Starlette lifespan that holds what ``open_resources`` opens while the app runs.

    Handlers get it back, typed, with :func:`opened`; Starlette's own ``app.state`` is untyped.
    """
    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        async with open_resources() as opened:
            app.state.resources = opened
            try:
                yield
            finally:
                del app.state.resources

    return run


def opened(app: Any, kind: type[R]) -> R:
    """What ``app``'s lifespan opened, as ``kind``; a clear error when the app is not running."""
    value = getattr(app.state, "resources", None)
    if not isinstance(value, kind):
        raise RuntimeError(f"no {kind.__name__}: the app's lifespan is not running")
    return value


def tune_collector() -> None:
    """Garbage collection for a long-running service: fewer, larger young collections, and what
    exists at start (modules, configuration, the app) moved out of the collector's sight for good."""
    gc.freeze()
    gc.set_threshold(FIRST_GENERATION_THRESHOLD, *gc.get_threshold()[1:])


def serve(app: Any, sock: socket.socket, **options: Any) -> None:
    """Run ``app`` on the bound ``sock`` until SIGTERM or SIGINT, then shut down gracefully and return.

    ``options`` go to ``uvicorn.Config`` (the remediator's connection limits, say).
    """
    import uvicorn

    tune_collector()

    config = uvicorn.Config(app, **{"log_config": None, "access_log": False, "lifespan": "on", **options})

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # "Stop" means exit 0 after the graceful shutdown: uvicorn alone re-raises the signal
            # afterwards, which ends the process with -15 and looks like a crash to supervisors.
            stop = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in stop}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    Server(config).run(sockets=[sock])
