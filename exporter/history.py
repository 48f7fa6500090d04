"""Run history per schedule: completed runs' durations and the runs the watchdog ended.

The counters are derived from the table, not from memory: the first read aggregates every
completed run; later reads add only the rows completed since (``completed_at`` at or after a
watermark). So a restarted exporter publishes the same totals as the one before it, and
Prometheus sees a counter that simply continues (an exporter that counted from its own start
would look like a reset and ``increase()`` would count the restart's backlog twice).

Late and equal timestamps: a writer stamps ``completed_at`` before its transaction commits, so a
row can become visible with a timestamp older than rows already read. Every read therefore goes
back ``overlap_seconds`` before the start of the previous read (by the exporter's clock), and
skips the ids it already counted in that stretch; only those ids are remembered. The overlap
must cover commit lag plus clock skew between the platform's writers and the exporter.

What the counters cannot see: rows the platform deletes (retention pruning) stay counted until the
exporter restarts, when the totals drop and Prometheus reads a counter reset; a late ``success``
written over a ``failed`` stays counted as failed (or, written more than ``overlap_seconds``
later, as both) until a restart. Both show as a one-off step, never as a lasting error.

Reads run in a worker thread. A scrape waits for the read it started at most its budget, then
publishes the last finished state; a read still running is joined by the next scrape, never
started twice. The first read of a large table (1,000,000 rows: see bench/bench_history.py) takes
a few scrapes; until it finishes ``exec_watchdog_exporter_history_ready`` is 0 and no history
series are published, rather than partial totals.

Exposition (a few lines)::

    exec_watchdog_schedule_run_duration_seconds_bucket{agent="a1",schedule_id="nightly",status="success",le="60.0"} 12.0
    exec_watchdog_schedule_run_duration_seconds_count{agent="a1",schedule_id="nightly",status="success"} 40.0
    exec_watchdog_schedule_runs_ended_by_watchdog_total{action="auto_terminated",agent="a1",schedule_id="nightly"} 3.0
    exec_watchdog_schedule_timeout_seconds{agent="a1",schedule_id="nightly"} 600.0
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
import structlog
from prometheus_client.utils import floatToGoString

from exec_watchdog.common.contract import ExporterMetric as names
from exec_watchdog.exporter.aging import Aging
from exec_watchdog.exporter.families import escape_label_value as _escape
from exec_watchdog.exporter.families import header as _header
from exec_watchdog.platform_access.run_history import (
    FINAL_STATUSES,
    WATCHDOG_ACTIONS,
    SkippedRow,
    completed_runs,
    completed_time,
    deleted_agents,
    schedule_timeouts,
)
from exec_watchdog.platform_access.timestamps import utcnow

log = structlog.get_logger("exporter")

# Upper bounds (seconds) from a second to a day. Between a minute and two hours, where timeouts are
# set, neighbours differ by at most half, so a p99 estimated inside a bucket (linearly, as
# histogram_quantile does) is off by a fraction of the bucket, not by a doubling.
DURATION_BUCKETS: tuple[float, ...] = (
    1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300, 360, 450, 600, 750, 900, 1200, 1500,
    1800, 2100, 2400, 2700, 3000, 3600, 4500, 5400, 7200, 10800, 14400, 21600, 43200, 86400, float("inf"),
)
OVERLAP_SECONDS = 300.0  # how far back each read looks for rows committed late
ADVICE_WINDOW_SECONDS = 7 * 86_400.0  # the production profile's advice_window (alerts/profiles.yml)

_Schedule = tuple[str, str]  # (agent, schedule_id)
_Inside = tuple[tuple[str, str, str], int] | tuple[str, str, str]  # see _Totals.inside


@dataclass(slots=True)
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))  # not cumulative
    total: float = 0.0
    before: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))  # completed before the window

    def observe(self, seconds: float) -> int:
        """Count one run; its bucket's index."""
        index = _bucket(seconds)
        self.buckets[index] += 1
        self.total += seconds
        return index


@dataclass(slots=True)
class _Totals:
    """Everything counted so far. Only the reader thread mutates it; scrapes read rendered bytes."""

    durations: dict[tuple[str, str, str], _Histogram] = field(default_factory=lambda: defaultdict(_Histogram))
    ended: dict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    skipped: int = 0
    since: datetime | None = None  # the next read takes rows completed at or after this (None: all rows)
    recent: set[str] = field(default_factory=set)  # ids already counted that the next read returns again
    # The exposition of each histogram and of each schedule's counters, re-rendered only when they
    # change: at ~130,000 series rendering everything on every read would cost more than the read.
    histogram_text: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    ended_text: dict[_Schedule, bytes] = field(default_factory=dict)
    # Counted runs that completed before the advice window (successful ones in their histogram's
    # `before`), and those still inside it, by time: (histogram key, bucket index) for a successful run,
    # (agent, schedule_id, action) for one the watchdog ended.
    ended_before: dict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    inside: Aging[_Inside] = field(default_factory=Aging)
    before_text: dict[_Schedule, tuple[bytes, bytes]] = field(default_factory=dict)  # (successful, ended)


class RunHistory:
    """The incremental reader and the exposition of what it has read."""

    def __init__(self, engine: sa.Engine, *, overlap_seconds: float = OVERLAP_SECONDS,
                 window_seconds: float = ADVICE_WINDOW_SECONDS,
                 clock: Callable[[], datetime] = utcnow, owns: Callable[[str], bool] | None = None) -> None:
        if overlap_seconds < 0:
            raise ValueError("the history overlap must not be negative")
        if not window_seconds > 0:
            raise ValueError("the advice window must be positive")
        self._engine = engine
        self._overlap = timedelta(seconds=overlap_seconds)
        self._window = timedelta(seconds=window_seconds)
        self._clock = clock
        self._owns = owns  # a shard publishes only its own agents' history: every series once in all
        self._totals = _Totals()
        self._lock = threading.Lock()  # one read at a time, even if called from two threads
        self._reading: asyncio.Future[None] | None = None
        self._failing = False
        self._rendered = _render_families(None, {}, read_seconds=None, window=window_seconds)
        self.reads = 0

    # -- reading ---------------------------------------------------------------------------------

    def read(self) -> None:
        """Add the rows completed since the last read (every completed row the first time).

        The watermark is the exporter's clock at the start of the previous read, minus the
        overlap: a row committed after that read began was stamped (by the writer's clock) no
        earlier than that, as long as commit lag plus clock skew stay below the overlap. Times are
        compared as times, whatever form ``completed_at`` is written in (``T`` or space, ``Z``,
        naive or an offset): the query asks for a superset, and rows before the watermark are
        left to the read that counted them.
        """
        with self._lock:
            started = time.perf_counter()
            totals = self._totals
            since = totals.since
            now = self._clock()
            next_since = now - self._overlap
            window_start = now - self._window
            cutoff = window_start.timestamp()  # a run completed at or before this is before the window
            # Below this text no accepted form is at or after next_since or inside the window: the first
            # read need not parse it.
            parse_floor = (min(next_since, window_start) - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
            recent: set[str] = set()
            changed: set[tuple[str, str, str]] = set()
            inside: list[tuple[float, _Inside]] = []
            before_changed: set[_Schedule] = set()
            with self._engine.connect() as conn:
                timeouts = schedule_timeouts(conn)
                hidden = deleted_agents(conn)  # still counted, not published while deleted
                if self._owns is not None:
                    timeouts = {key: value for key, value in timeouts.items() if self._owns(key[0])}
                for run in completed_runs(conn, completed_since=since):
                    parse = since is not None or run.completed_at >= parse_floor
                    at = completed_time(run) if parse else None
                    if since is not None and at is not None and at < since:
                        continue  # before the watermark: the read that saw it counted it
                    # Will the next read's query return it again? Then remember it was counted.
                    again = parse and (at is None or at >= next_since)
                    if run.id in totals.recent:
                        if again:
                            recent.add(run.id)
                        continue
                    if again:
                        recent.add(run.id)
                    if isinstance(run, SkippedRow):
                        totals.skipped += 1
                        continue
                    if self._owns is not None and not self._owns(run.agent):
                        continue
                    key = (run.agent, run.schedule_id, run.status)
                    histogram = totals.durations[key]
                    bucket = histogram.observe(run.duration_seconds)
                    changed.add(key)
                    # The advice window: a run with no readable time counts as before it (never advised on).
                    when = at.timestamp() if at is not None else None
                    inside_at = when if when is not None and when > cutoff else None
                    if run.status == "success":
                        if inside_at is None:
                            histogram.before[bucket] += 1
                        else:
                            inside.append((inside_at, (key, bucket)))
                    if run.watchdog_action is not None:
                        ended = (run.agent, run.schedule_id, run.watchdog_action)
                        totals.ended[ended] += 1
                        if inside_at is None:
                            totals.ended_before[ended] += 1
                        else:
                            inside.append((inside_at, ended))
                    if len(inside) >= 20_000:  # the first read: hand over in batches, never a week of tuples
                        totals.inside.add(inside)
                        inside = []
            totals.inside.add(inside)
            for entry in totals.inside.expire(cutoff):
                if len(entry) == 2:  # (histogram key, bucket)
                    totals.durations[entry[0]].before[entry[1]] += 1
                    before_changed.add(entry[0][:2])
                else:
                    totals.ended_before[entry] += 1
                    before_changed.add(entry[:2])
            totals.since, totals.recent = next_since, recent
            for key in changed:
                totals.histogram_text[key] = _histogram_text(key, totals.durations[key])
                totals.ended_text[key[:2]] = _ended_text(key[:2], totals.ended)
                before_changed.add(key[:2])
            for schedule in before_changed:
                totals.before_text[schedule] = _before_text(schedule, totals)
            self.reads += 1
            seconds = time.perf_counter() - started
            self._rendered = _render_families(totals, timeouts, read_seconds=seconds, hidden=hidden,
                                              window=self._window.total_seconds())

    # -- scraping --------------------------------------------------------------------------------

    async def scrape(self, budget: float) -> bytes:
        """The history families, after waiting at most ``budget`` seconds for a fresh read."""
        if self._reading is None or self._reading.done():
            task = asyncio.ensure_future(asyncio.to_thread(self._read_logged))
            self._reading = task
        # Still reading after the budget: publish the last finished state; the next scrape joins this read.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._reading), max(0.0, budget))
        return self._rendered

    def _read_logged(self) -> None:
        try:
            self.read()
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            if not self._failing:  # once per outage, not every scrape; the totals stay as last read
                log.warning("run history not read", error=f"{type(exc).__name__}: {str(exc)[:200]}")
            self._failing = True
        else:
            if self._failing:
                log.info("run history read again")
            self._failing = False

    def exposition(self) -> bytes:
        return self._rendered


# -- exposition ----------------------------------------------------------------------------------

_number: Callable[[float], str] = floatToGoString  # client_python's formatting (1e+06, +Inf)
_LE = [_number(b) for b in DURATION_BUCKETS]


def _histogram_text(key: tuple[str, str, str], histogram: _Histogram) -> bytes:
    agent, schedule, status = key
    duration = names.SCHEDULE_RUN_DURATION
    labels = f'agent="{_escape(agent)}",schedule_id="{_escape(schedule)}",status="{status}"'
    cumulative, lines = 0, []
    for le, count in zip(_LE, histogram.buckets, strict=True):
        cumulative += count
        lines.append(f'{duration}_bucket{{{labels},le="{le}"}} {_number(cumulative)}\n')
    lines.append(f"{duration}_count{{{labels}}} {_number(cumulative)}\n")
    lines.append(f"{duration}_sum{{{labels}}} {_number(histogram.total)}\n")
    return "".join(lines).encode()


def _bucket(seconds: float) -> int:
    return bisect.bisect_left(DURATION_BUCKETS, seconds)


def _before_text(schedule: _Schedule, totals: _Totals) -> tuple[bytes, bytes]:
    """Both before-window families' lines of one schedule: every bucket if it has successful runs, every
    action (zeros included, as the counters they are subtracted from)."""
    agent, schedule_id = schedule
    labels = f'agent="{_escape(agent)}",'
    tail = f'schedule_id="{_escape(schedule_id)}"'
    lines: list[str] = []
    histogram = totals.durations.get((agent, schedule_id, "success"))
    if histogram is not None:
        name = names.SCHEDULE_SUCCESSFUL_RUNS_BEFORE_WINDOW
        cumulative = 0
        for count, le in zip(histogram.before, _LE, strict=True):
            cumulative += count
            lines.append(f'{name}{{{labels}le="{le}",{tail}}} {_number(cumulative)}\n')
    name = names.SCHEDULE_RUNS_ENDED_BEFORE_WINDOW
    ended = "".join(f'{name}{{action="{action}",{labels}{tail}}} '
                    f"{_number(totals.ended_before.get((agent, schedule_id, action), 0))}\n"
                    for action in WATCHDOG_ACTIONS)
    return "".join(lines).encode(), ended.encode()


def _ended_text(schedule: _Schedule, ended: dict[tuple[str, str, str], int]) -> bytes:
    # Every action for every schedule with runs, zeros included, so the first one shows in increase().
    agent, schedule_id = schedule
    name = names.SCHEDULE_RUNS_ENDED_BY_WATCHDOG
    return "".join(
        f'{name}{{action="{action}",agent="{_escape(agent)}",schedule_id="{_escape(schedule_id)}"}} '
        f"{_number(ended.get((agent, schedule_id, action), 0))}\n" for action in WATCHDOG_ACTIONS).encode()


def _render_families(totals: _Totals | None, timeouts: dict[_Schedule, int], *, read_seconds: float | None,
                     window: float, hidden: frozenset[str] | set[str] = frozenset()) -> bytes:
    """Text format 0.0.4, as client_python writes histograms, counters and gauges, in label order (but a
    bucket's ``le`` last, as Prometheus' Go client writes it; tests/test_exporter_history.py checks the rest).
    Schedules of ``hidden`` agents (soft-deleted) are left out."""
    parts = [_header(names.SCHEDULE_RUN_DURATION).encode()]
    if totals is not None:
        parts.extend(totals.histogram_text[key] for key in sorted(totals.histogram_text) if key[0] not in hidden)
    parts.append(_header(names.SCHEDULE_RUNS_ENDED_BY_WATCHDOG).encode())
    if totals is not None:
        parts.extend(totals.ended_text[key] for key in sorted(totals.ended_text) if key[0] not in hidden)
    lines = [_header(names.SCHEDULE_TIMEOUT)]
    lines.extend(f'{names.SCHEDULE_TIMEOUT}{{agent="{_escape(agent)}",schedule_id="{_escape(schedule)}"}} '
                 f"{_number(seconds)}\n" for (agent, schedule), seconds in sorted(timeouts.items()))
    lines.append(_header(names.HISTORY_READY))
    lines.append(f"{names.HISTORY_READY} {'0.0' if totals is None else '1.0'}\n")
    lines.append(_header(names.HISTORY_SKIPPED_ROWS))
    if totals is not None:
        lines.append(f"{names.HISTORY_SKIPPED_ROWS} {_number(totals.skipped)}\n")
    lines.append(_header(names.HISTORY_READ_DURATION))
    if read_seconds is not None:
        lines.append(f"{names.HISTORY_READ_DURATION} {_number(read_seconds)}\n")
    parts.append("".join(lines).encode())
    befores = [] if totals is None else [totals.before_text[key] for key in sorted(totals.before_text)
                                         if key[0] not in hidden]
    before_names = (names.SCHEDULE_SUCCESSFUL_RUNS_BEFORE_WINDOW, names.SCHEDULE_RUNS_ENDED_BEFORE_WINDOW)
    for index, name in enumerate(before_names):
        parts.append(_header(name).encode())
        parts.extend(texts[index] for texts in befores)
    parts.append(f"{_header(names.HISTORY_WINDOW)}{names.HISTORY_WINDOW} {_number(window)}\n".encode())
    return b"".join(parts)


__all__ = ["DURATION_BUCKETS", "FINAL_STATUSES", "RunHistory"]
