"""Where the remediator's CPU goes: cProfile over the event loop's thread and every worker thread.

cProfile sees only the thread that enabled it, and the remediator does its SQL in anyio worker
threads; :func:`profiled` therefore also wraps each ``anyio.to_thread.run_sync`` call in a profiler
of its own and merges them all. :func:`breakdown` sorts self time (``tottime``) into the parts the
issue names, by the file (or built-in) it was spent in.
"""

from __future__ import annotations

import contextlib
import cProfile
import pstats
from collections.abc import Callable, Iterator
from typing import Any

import anyio.to_thread

# (part, substrings of a profile entry's file or name), first match wins; order matters.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("idle (waiting in epoll)", ("select.epoll",)),
    ("JSON decoding (agent answers, notification)", ("json/decoder", "agent_wire", "json.loads", "scanner",
                                                     "remediator/payload.py", "retained_result",
                                                     "platform_access/result_envelope")),
    ("evidence building and serialisation", ("remediator/evidence.py", "json/encoder", "json.dumps",
                                             "encode_basestring", "common/redaction.py")),
    ("SQL (SQLAlchemy, driver, our queries)", ("sqlalchemy/", "sqlite3", "psycopg", "platform_access/database",
                                               "platform_access/activities", "platform_access/agent_events",
                                               "platform_access/slots", "platform_access/cleanup_rows",
                                               "platform_access/inflight", "remediator/audit.py",
                                               "remediator/closing.py", "remediator/action_claims.py")),
    ("logging", ("logging/", "structlog/", "common/logs.py", "orjson")),
    ("announcements", ("remediator/announce.py", "redis/")),
    ("metrics", ("prometheus_client/",)),
    ("HTTP exchanges (agent client, transport, sockets)", ("httpx/", "httpcore/", "h11/", "poll_transport",
                                                          "agent_client", "_socket", "asyncio/streams",
                                                          "asyncio/selector_events", "urllib/parse",
                                                          "remediator/deadlines.py", "ipaddress",
                                                          "platform_access/names")),
    ("event loop, tasks, threads", ("asyncio/", "anyio/", "threading", "concurrent/", "contextlib",
                                    "_contextvars", "_asyncio", "queue.py")),
    ("remediator decisions (remediate, orphans, claim, texts)", ("remediator/",)),
)


@contextlib.contextmanager
def profiled() -> Iterator[Profiled]:
    """Profile the calling thread and every worker-thread call made meanwhile; yields a holder whose
    ``stats`` is set on exit."""
    holder = Profiled()
    workers: list[cProfile.Profile] = []
    original = anyio.to_thread.run_sync

    async def run_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def wrapped(*inner: Any) -> Any:
            profile = cProfile.Profile()
            profile.enable()
            try:
                return func(*inner)
            finally:
                profile.disable()
                workers.append(profile)
        return await original(wrapped, *args, **kwargs)

    main = cProfile.Profile()
    anyio.to_thread.run_sync = run_sync  # type: ignore[assignment]
    main.enable()
    try:
        yield holder
    finally:
        main.disable()
        anyio.to_thread.run_sync = original
        stats = pstats.Stats(main)
        for profile in workers:
            stats.add(profile)
        holder.stats = stats


class Profiled:
    stats: pstats.Stats | None = None


def part_of(filename: str, name: str) -> str:
    where = f"{filename}:{name}"
    for part, needles in PARTS:
        if any(n in where for n in needles):
            return part
    return OTHER


OTHER = "other (starlette, dataclasses, enum, re, datetime ...)"


def breakdown(stats: pstats.Stats) -> dict[str, float]:
    """Self seconds per part, idle included (the caller leaves it out of the shares).

    A built-in (a socket write, ``re.sub``, ``isinstance``) has no file of its own: its time goes to
    the parts of its direct callers, split as they called it.
    """
    parts: dict[str, float] = {}
    for (filename, _line, name), (_cc, _nc, tottime, _ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        part = part_of(filename, name)
        if filename != "~" or part != OTHER or not callers:
            parts[part] = parts.get(part, 0.0) + tottime
            continue
        weights = {caller: timing[2] for caller, timing in callers.items()}  # self time spent per caller
        total = sum(weights.values()) or 1.0
        for (caller_file, _l, caller_name), weight in weights.items():
            caller_part = part_of(caller_file, caller_name)
            parts[caller_part] = parts.get(caller_part, 0.0) + tottime * weight / total
    return parts


def report(stats: pstats.Stats, orphans: int, cpu_per_orphan_ms: float, top: int = 25) -> str:
    """The parts as shares of the busy profile, scaled to the unprofiled CPU per orphan, and the top functions."""
    parts = breakdown(stats)
    idle = parts.pop("idle (waiting in epoll)", 0.0)
    busy = sum(parts.values())
    lines = [f"cProfile, {orphans} orphans: {busy:.3f} s busy under the profiler ({idle:.3f} s waiting in epoll "
             f"left out); shares scaled to the unprofiled {cpu_per_orphan_ms:.3f} ms CPU per orphan",
             f"{'part':<58} {'share':>6} {'ms/orphan':>10}"]
    for part, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        share = seconds / busy if busy else 0.0
        lines.append(f"{part:<58} {share:6.1%} {share * cpu_per_orphan_ms:10.3f}")
    lines.append(f"top {top} functions by self time:")
    entries = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])  # type: ignore[attr-defined]
    for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in entries[:top]:
        short = filename.split("site-packages/")[-1].split("python3.11/")[-1].split("/work/wt/")[-1]
        lines.append(f"  {tottime:7.3f} s self {cumtime:7.3f} s cum {calls:>8} calls  {short}:{line}({name})")
    return "\n".join(lines)
