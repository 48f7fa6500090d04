"""client_python's rendering of what the exporter publishes: the oracle its hand-written writers are checked against.

Production writes /metrics itself (exporter/exposition.py, exporter/history.py) because client_python's
families cost too much at 10,000 executions. Here the same samples are built the plain client_python
way, from the values alone; names, types, HELP texts and label names come from exporter/families.py,
so a comparison with ``generate_latest`` checks values, order and escaping, not a copy of the texts.
Tests also use :class:`ExecWatchdogCollector` to read a snapshot's samples back
(``registry.get_sample_value``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from exec_watchdog.common.contract import ExporterMetric as names
from exec_watchdog.exporter.families import BY_NAME, Family
from exec_watchdog.exporter.history import DURATION_BUCKETS
from exec_watchdog.exporter.snapshot import Snapshot
from exec_watchdog.platform_access.run_history import WATCHDOG_ACTIONS


def _declared(name: str, kind: str) -> Family:
    family = BY_NAME[name]
    assert family.kind == kind, f"{name} is declared a {family.kind}, the oracle builds a {kind}"
    return family


def gauge(name: str) -> GaugeMetricFamily:
    family = _declared(name, "gauge")
    return GaugeMetricFamily(family.name, family.help, labels=family.labels)


def counter(name: str) -> CounterMetricFamily:
    family = _declared(name, "counter")
    return CounterMetricFamily(family.name, family.help, labels=family.labels)  # drops and re-adds _total


def histogram(name: str) -> HistogramMetricFamily:
    family = _declared(name, "histogram")
    return HistogramMetricFamily(family.name, family.help, labels=family.labels)


class ExecWatchdogCollector(Collector):
    """Publishes the snapshot ``source()`` returns, e.g.::

        exec_watchdog_execution_runtime_seconds{agent="a1",execution_id="e-42",schedule_id="nightly"} 4213.5
        exec_watchdog_execution_agent_known{agent="a1",execution_id="e-42",schedule_id="nightly"} 0.0
        exec_watchdog_agent_up{agent="a1"} 1.0
        exec_watchdog_exporter_agent_poll_errors_total{agent="a2",reason="timeout"} 3.0

    ``source`` is called once per ``collect()`` and nothing is kept between calls, as in the exporter.
    """

    def __init__(self, source: Callable[[], Snapshot]) -> None:
        self._source = source

    def describe(self) -> Iterator[Metric]:
        # Names only, without calling the source: registering must not trigger a scrape.
        yield from _SnapshotFamilies.empty()

    def collect(self) -> Iterator[Metric]:
        snapshot = self._source()
        f = _SnapshotFamilies.empty()

        for e in snapshot.executions:
            labels = [e.agent, e.execution_id, e.schedule_id]
            f.runtime.add_metric(labels, e.runtime_seconds)
            f.timeout.add_metric(labels, e.timeout_seconds)
            if e.agent_known is not None:
                f.known.add_metric(labels, 1.0 if e.agent_known else 0.0)
            if e.recently_completed is not None:
                f.recently_completed.add_metric(labels, 1.0 if e.recently_completed else 0.0)
            if e.dispatch_inflight is not None:
                f.inflight.add_metric(labels, 1.0 if e.dispatch_inflight else 0.0)
            if e.unknown_since is not None:
                f.unknown_since.add_metric(labels, e.unknown_since)

        for r in snapshot.cleanup_rows:
            family = f.skipped if r.status == "skipped" else f.queued
            family.add_metric([r.agent, r.execution_id, r.schedule_id], r.age_seconds)

        for act in snapshot.stale_activities:
            f.activities.add_metric([act.activity_id, act.activity_type, act.agent], act.age_seconds)

        for c in snapshot.cleanup:
            labels = [c.agent, c.execution_id, c.schedule_id]
            if c.stale_overrun_seconds is not None:
                f.stale_overrun.add_metric([*labels, c.stale_window or ""], c.stale_overrun_seconds)
            if c.sessionless_runtime_seconds is not None:
                f.sessionless.add_metric(labels, c.sessionless_runtime_seconds)

        for a in snapshot.agents:
            f.up.add_metric([a.name], 1.0 if a.up else 0.0)
            if a.registry is not None:
                f.registry.add_metric([a.name, "running"], a.registry.running)
                f.registry.add_metric([a.name, "pending"], a.registry.pending)
                f.registry.add_metric([a.name, "recently_completed"], a.registry.recently_completed)
            if a.slots_used is not None:
                f.slots_used.add_metric([a.name], a.slots_used)
            f.slots_limit.add_metric([a.name], a.slots_limit)

        for slot in snapshot.slots:
            f.slot_age.add_metric([slot.agent, slot.execution_id], slot.age_seconds)
            f.slot_ttl.add_metric([slot.agent, slot.execution_id], slot.ttl_seconds)
            f.slot_leaked.add_metric([slot.agent, slot.execution_id], 1.0 if slot.leaked else 0.0)
        if snapshot.slots_paused is not None:
            f.slots_paused.add_metric([], 1.0 if snapshot.slots_paused else 0.0)

        f.duration.add_metric([], snapshot.duration_seconds)
        f.database_up.add_metric([], 1.0 if snapshot.database_up else 0.0)
        if snapshot.invalid_rows is not None:
            f.invalid_rows.add_metric([], snapshot.invalid_rows)
        for (agent, reason), count in snapshot.poll_errors.items():
            f.poll_errors.add_metric([agent, reason], count)
        f.build_info.add_metric([snapshot.version], 1.0)
        yield from f


class _SnapshotFamilies(NamedTuple):
    # The order the exporter writes them in, stated here independently of families.SNAPSHOT.
    runtime: GaugeMetricFamily
    timeout: GaugeMetricFamily
    known: GaugeMetricFamily
    recently_completed: GaugeMetricFamily
    inflight: GaugeMetricFamily
    skipped: GaugeMetricFamily
    queued: GaugeMetricFamily
    activities: GaugeMetricFamily
    unknown_since: GaugeMetricFamily
    stale_overrun: GaugeMetricFamily
    sessionless: GaugeMetricFamily
    up: GaugeMetricFamily
    registry: GaugeMetricFamily
    slots_used: GaugeMetricFamily
    slots_limit: GaugeMetricFamily
    slot_age: GaugeMetricFamily
    slot_ttl: GaugeMetricFamily
    slot_leaked: GaugeMetricFamily
    slots_paused: GaugeMetricFamily
    duration: GaugeMetricFamily
    database_up: GaugeMetricFamily
    invalid_rows: GaugeMetricFamily
    poll_errors: CounterMetricFamily
    build_info: GaugeMetricFamily

    @classmethod
    def empty(cls) -> _SnapshotFamilies:
        return cls(
            runtime=gauge(names.EXECUTION_RUNTIME),
            timeout=gauge(names.EXECUTION_TIMEOUT),
            known=gauge(names.EXECUTION_AGENT_KNOWN),
            recently_completed=gauge(names.EXECUTION_RECENTLY_COMPLETED),
            inflight=gauge(names.EXECUTION_DISPATCH_INFLIGHT),
            skipped=gauge(names.SKIPPED_UNFINALIZED_AGE),
            queued=gauge(names.QUEUED_AGE),
            activities=gauge(names.ACTIVITY_STARTED_AGE),
            unknown_since=gauge(names.EXECUTION_UNKNOWN_SINCE),
            stale_overrun=gauge(names.EXECUTION_STALE_OVERRUN),
            sessionless=gauge(names.EXECUTION_SESSIONLESS_RUNTIME),
            up=gauge(names.AGENT_UP),
            registry=gauge(names.AGENT_REGISTRY_EXECUTIONS),
            slots_used=gauge(names.AGENT_SLOTS_USED),
            slots_limit=gauge(names.AGENT_SLOTS_LIMIT),
            slot_age=gauge(names.SLOT_AGE),
            slot_ttl=gauge(names.SLOT_TTL),
            slot_leaked=gauge(names.SLOT_LEAKED),
            slots_paused=gauge(names.SLOTS_PAUSED),
            duration=gauge(names.SCRAPE_DURATION),
            database_up=gauge(names.DATABASE_UP),
            invalid_rows=gauge(names.INVALID_ROWS),
            poll_errors=counter(names.AGENT_POLL_ERRORS),
            build_info=gauge(names.BUILD_INFO),
        )


class HistoryValues(NamedTuple):
    """What the run history publishes, as plain values: the oracle's input for its families."""

    # (agent, schedule_id, status) -> ({upper bound: runs in that bucket, not cumulative}, sum of seconds)
    durations: Mapping[tuple[str, str, str], tuple[Mapping[float, int], float]]
    ended: Mapping[tuple[str, str, str], int]  # (agent, schedule_id, action) -> runs the watchdog ended
    timeouts: Mapping[tuple[str, str], int]  # (agent, schedule_id) -> seconds
    skipped: int | None  # None until the first read has finished
    read_seconds: float | None
    # (agent, schedule_id, bucket index or action) -> counted runs that completed before the advice window
    before: Mapping[tuple[str, str, int | str], int] = {}
    window_seconds: float = 7 * 86_400.0


def history_families(values: HistoryValues) -> list[Metric]:
    """The run history's families, series in label order, as client_python would hold them."""
    duration = histogram(names.SCHEDULE_RUN_DURATION)
    for (agent, schedule, status), (buckets, total) in sorted(values.durations.items()):
        cumulative, points = 0, []
        for bound in sorted(buckets):
            cumulative += buckets[bound]
            points.append(("+Inf" if bound == float("inf") else str(float(bound)), float(cumulative)))
        duration.add_metric([agent, schedule, status], points, total)
    ended = counter(names.SCHEDULE_RUNS_ENDED_BY_WATCHDOG)
    for agent, schedule in sorted({key[:2] for key in values.durations}):
        # Every action for every schedule with runs, zeros included, in the contract's action order.
        for action in WATCHDOG_ACTIONS:
            ended.add_metric([action, agent, schedule], values.ended.get((agent, schedule, action), 0))
    timeout = gauge(names.SCHEDULE_TIMEOUT)
    for (agent, schedule), seconds in sorted(values.timeouts.items()):
        timeout.add_metric([agent, schedule], seconds)
    ready = gauge(names.HISTORY_READY)
    ready.add_metric([], 0.0 if values.skipped is None else 1.0)
    skipped = gauge(names.HISTORY_SKIPPED_ROWS)
    if values.skipped is not None:
        skipped.add_metric([], values.skipped)
    read = gauge(names.HISTORY_READ_DURATION)
    if values.read_seconds is not None:
        read.add_metric([], values.read_seconds)
    before_runs = counter(names.SCHEDULE_SUCCESSFUL_RUNS_BEFORE_WINDOW)
    before_ended = counter(names.SCHEDULE_RUNS_ENDED_BEFORE_WINDOW)
    for agent, schedule in sorted({key[:2] for key in values.durations}):
        if (agent, schedule, "success") in values.durations:
            cumulative = 0
            for index, bound in enumerate(DURATION_BUCKETS):
                cumulative += values.before.get((agent, schedule, index), 0)
                le = "+Inf" if bound == float("inf") else str(float(bound))
                before_runs.add_metric([agent, le, schedule], cumulative)
        for action in WATCHDOG_ACTIONS:
            before_ended.add_metric([action, agent, schedule], values.before.get((agent, schedule, action), 0))
    window = gauge(names.HISTORY_WINDOW)
    window.add_metric([], values.window_seconds)
    return [duration, ended, timeout, ready, skipped, read, before_runs, before_ended, window]


class FixedCollector(Collector):
    """Publishes the families it was given (for ``generate_latest``)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._metrics
