"""client_python's rendering of what the exporter publishes: the oracle its hand-written writers are checked against.

Production writes /metrics itself (exporter/exposition.py, exporter/history.py) because client_python's
families cost too much at 10,000 executions. Here the same samples are built the plain client_python
way, from the values alone; names, types, HELP texts and label names come from exporter/families.py,
so a comparison with ``generate_latest`` checks values, order and escaping, not a copy of the texts.
Tests also use :class:`ExecWatchdogCollector` to read a snapshot's samples back
(``registry.get_sample_value``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from exec_watchdog.exporter import metric_names as names
from exec_watchdog.exporter.families import BY_NAME, Family
from exec_watchdog.exporter.snapshot import Snapshot


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

        for a in snapshot.agents:
            f.up.add_metric([a.name], 1.0 if a.up else 0.0)
            if a.registry is not None:
                f.registry.add_metric([a.name, "running"], a.registry.running)
                f.registry.add_metric([a.name, "pending"], a.registry.pending)
                f.registry.add_metric([a.name, "recently_completed"], a.registry.recently_completed)
            if a.slots_used is not None:
                f.slots_used.add_metric([a.name], a.slots_used)
            f.slots_limit.add_metric([a.name], a.slots_limit)

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
    up: GaugeMetricFamily
    registry: GaugeMetricFamily
    slots_used: GaugeMetricFamily
    slots_limit: GaugeMetricFamily
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
            up=gauge(names.AGENT_UP),
            registry=gauge(names.AGENT_REGISTRY_EXECUTIONS),
            slots_used=gauge(names.AGENT_SLOTS_USED),
            slots_limit=gauge(names.AGENT_SLOTS_LIMIT),
            duration=gauge(names.SCRAPE_DURATION),
            database_up=gauge(names.DATABASE_UP),
            invalid_rows=gauge(names.INVALID_ROWS),
            poll_errors=counter(names.AGENT_POLL_ERRORS),
            build_info=gauge(names.BUILD_INFO),
        )
