"""Serving the remediator with limits uvicorn does not set by itself.

- A client must finish its request head within ``header_timeout`` seconds, on a new connection and
  on every kept-alive one; uvicorn alone waits forever for headers that never end (slowloris).
- At most ``max_connections`` connections (kept below the process's file limit): past it the
  oldest connection still owing its request head is dropped, or else the new one is closed at
  once, so accept() never fails for lack of descriptors.
- Repeated warnings (bad requests, over-limit, accept errors) are logged at most a few times per
  interval, with a count of what was left out, so an attack cannot turn into a log flood.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from exec_watchdog.common.serving import serve as serve_app

DESCRIPTOR_HEADROOM = 64  # files, database and Redis sockets, agent calls


def connection_cap(wanted: int) -> int:
    """``wanted``, but below the soft limit of open files (raised to the hard limit first)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - DESCRIPTOR_HEADROOM))


def guarded_protocol(header_timeout: float, max_connections: int) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a request-head deadline and a connection cap."""

    class GuardedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None
        _refused = False

        _opened = 0.0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections and not self._evict_a_waiting_head():
                self._refused, self.transport = True, transport
                transport.abort()  # counted, not logged one by one
                _refusals.note()
                return
            self._opened = time.monotonic()
            super().connection_made(transport)
            self._arm()

        def _evict_a_waiting_head(self) -> bool:
            """At the cap, the oldest connection still owing its request head makes room: clients
            that never finish their headers cannot lock the others out."""
            waiting = [c for c in self.connections if isinstance(c, GuardedH11Protocol) and c._head_timer is not None
                       and not c.transport.is_closing()]
            if not waiting:
                return False
            oldest = min(waiting, key=lambda c: c._opened)
            oldest.transport.abort()
            self.connections.discard(oldest)
            return True

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:
                if self._head_timer is None:  # the next request's head has begun: it gets the deadline
                    self._arm()
            else:
                self._disarm()

        def _arm(self) -> None:
            self._head_timer = self.loop.call_later(header_timeout, self._head_late)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_late(self) -> None:
            self._head_timer = None
            idle = self.cycle is None or self.cycle.response_complete
            if self.conn.their_state is h11.IDLE and idle and not self.transport.is_closing():
                self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._disarm()  # idle between requests: uvicorn's keep-alive timeout governs

    return GuardedH11Protocol


class RateLimitedWarnings(logging.Filter):
    """Let each distinct message through at most ``burst`` times per ``interval`` seconds."""

    def __init__(self, burst: int = 5, interval: float = 60.0) -> None:
        super().__init__()
        self.burst, self.interval = burst, interval
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = f"{record.name}:{record.msg}"[:200]
        now = time.monotonic()
        start, count = self._seen.get(key, (now, 0))
        if now - start > self.interval:
            if count > self.burst:
                record.msg = f"{record.msg} (and {count - self.burst} more like it in the last {self.interval:g} s)"
            start, count = now, 0
        self._seen[key] = (start, count + 1)
        if len(self._seen) > 1000:
            self._seen.clear()
        return count < self.burst


class _Refusals:
    def __init__(self) -> None:
        self._log = logging.getLogger("uvicorn.error")

    def note(self) -> None:
        self._log.warning("connection refused: connection cap reached")


_refusals = _Refusals()


def serve(app: Any, sock: socket.socket, *, max_connections: int, header_timeout: float) -> None:
    cap = connection_cap(max_connections)
    limiter = RateLimitedWarnings()
    for name in ("uvicorn.error", "uvicorn", "asyncio"):
        logging.getLogger(name).addFilter(limiter)
    serve_app(app, sock, http=guarded_protocol(header_timeout, cap),
              limit_concurrency=cap + 1,  # uvicorn counts connections too: the cap above already bounds them
              h11_max_incomplete_event_size=64 * 1024,
              timeout_keep_alive=75)  # longer than Alertmanager's idle connections: avoids EOF on reuse
