"""The exporter's client_python collector: renders one :class:`Snapshot` as metric families.

Every ``collect()`` asks its source for the current snapshot and yields fresh ``*MetricFamily``
objects; nothing is kept between scrapes, so the series of an execution that ended are simply
not there at the next scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exec_watchdog.exporter import metric_names as names
from exec_watchdog.exporter.snapshot import Snapshot

EXECUTION_LABELS = ("agent", "execution_id", "schedule_id")

HELP = {
    names.EXECUTION_RUNTIME: "Seconds since the running execution started (now - started_at).",
    names.EXECUTION_TIMEOUT: "Effective timeout of the running execution: COALESCE(schedule, agent, 3600).",
    names.EXECUTION_AGENT_KNOWN: "1 if the agent's registry has the execution (running, pending or recently "
                                 "completed), 0 if the agent answered without it; absent when the agent could "
                                 "not be asked.",
    names.EXECUTION_RECENTLY_COMPLETED: "1 if the agent lists the execution as recently completed (finished, "
                                        "its report not in the database yet), else 0; absent when the agent "
                                        "could not be asked.",
    names.EXECUTION_DISPATCH_INFLIGHT: "1 if a backend dispatcher may still hold the execution (its in-flight "
                                       "marker is alive, or the markers are unreadable and it is younger than "
                                       "the in-flight bound), else 0; absent unless the agent answered without "
                                       "it running or pending.",
    names.AGENT_UP: "1 if the agent answered GET /api/executions/running in this scrape, else 0.",
    names.AGENT_REGISTRY_EXECUTIONS: "Executions in the agent's registry, by state.",
    names.AGENT_SLOTS_USED: "Capacity slots held on the agent.",
    names.AGENT_SLOTS_LIMIT: "Capacity slot limit of the agent (agent_ownership.max_parallel_tasks, default 3).",
    names.SCRAPE_DURATION: "Wall time of this scrape's gathering: database read, agent polls and slot read.",
    names.DATABASE_UP: "1 if the running-executions query succeeded in this scrape, else 0.",
    names.INVALID_ROWS: "Running rows that cannot be published (unreadable started_at, missing or unsafe "
                        "agent name).",
    names.AGENT_POLL_ERRORS: "Failed polls of an agent's running executions, by reason.",
    names.BUILD_INFO: "The exporter's version; always 1.",
}


class ExecWatchdogCollector(Collector):
    """Publishes the snapshot ``source()`` returns, e.g.::

        exec_watchdog_execution_runtime_seconds{agent="a1",execution_id="e-42",schedule_id="nightly"} 4213.5
        exec_watchdog_execution_timeout_seconds{agent="a1",execution_id="e-42",schedule_id="nightly"} 3600.0
        exec_watchdog_execution_agent_known{agent="a1",execution_id="e-42",schedule_id="nightly"} 0.0
        exec_watchdog_execution_recently_completed{agent="a1",execution_id="e-42",schedule_id="nightly"} 0.0
        exec_watchdog_execution_dispatch_inflight{agent="a1",execution_id="e-42",schedule_id="nightly"} 0.0
        exec_watchdog_agent_up{agent="a1"} 1.0
        exec_watchdog_agent_registry_executions{agent="a1",state="pending"} 2.0
        exec_watchdog_exporter_database_up 1.0
        exec_watchdog_exporter_agent_poll_errors_total{agent="a2",reason="timeout"} 3.0

    ``source`` is called once per ``collect()``; the app passes the snapshot it has just gathered,
    tests pass a snapshot they built.
    """

    def __init__(self, source: Callable[[], Snapshot]) -> None:
        self._source = source

    def describe(self) -> Iterator[Metric]:
        # Names only, without calling the source: registering must not trigger a scrape.
        yield from _Families.empty()

    def collect(self) -> Iterator[Metric]:
        snapshot = self._source()
        f = _Families.empty()

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


class _Families(NamedTuple):
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
    def empty(cls) -> _Families:
        def gauge(name: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, HELP[name], labels=labels)

        return cls(
            runtime=gauge(names.EXECUTION_RUNTIME, EXECUTION_LABELS),
            timeout=gauge(names.EXECUTION_TIMEOUT, EXECUTION_LABELS),
            known=gauge(names.EXECUTION_AGENT_KNOWN, EXECUTION_LABELS),
            recently_completed=gauge(names.EXECUTION_RECENTLY_COMPLETED, EXECUTION_LABELS),
            inflight=gauge(names.EXECUTION_DISPATCH_INFLIGHT, EXECUTION_LABELS),
            up=gauge(names.AGENT_UP, ("agent",)),
            registry=gauge(names.AGENT_REGISTRY_EXECUTIONS, ("agent", "state")),
            slots_used=gauge(names.AGENT_SLOTS_USED, ("agent",)),
            slots_limit=gauge(names.AGENT_SLOTS_LIMIT, ("agent",)),
            duration=gauge(names.SCRAPE_DURATION),
            database_up=gauge(names.DATABASE_UP),
            invalid_rows=gauge(names.INVALID_ROWS),
            poll_errors=CounterMetricFamily(names.AGENT_POLL_ERRORS, HELP[names.AGENT_POLL_ERRORS],
                                            labels=("agent", "reason")),
            build_info=gauge(names.BUILD_INFO, ("version",)),
        )
