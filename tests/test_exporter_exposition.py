"""The fast text renderer writes exactly what client_python's generate_latest writes."""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import render
from exporter.collector import ExecWatchdogCollector
from exporter.exposition import render_text
from exporter.snapshot import AgentFacts, ExecutionFacts, RegistryCounts, Snapshot


class Families:
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def expected(families: list[Metric]) -> bytes:
    return generate_latest(Families(families))


labels = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**18, 10**18))


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    executions = tuple(
        ExecutionFacts(draw(labels), draw(labels), draw(labels), draw(st.floats()), draw(st.integers(0, 10**9)),
                       draw(st.sampled_from([True, False, None])))
        for _ in range(draw(st.integers(0, 5))))
    agents = tuple(
        AgentFacts(draw(labels), draw(st.booleans()),
                   draw(st.none() | st.builds(RegistryCounts, st.integers(0, 99), st.integers(0, 99),
                                              st.integers(0, 99))),
                   draw(st.none() | st.integers(0, 10**6)), draw(st.integers(1, 1000)))
        for _ in range(draw(st.integers(0, 3))))
    errors = draw(st.dictionaries(st.tuples(labels, labels), st.integers(0, 10**9), max_size=3))
    return Snapshot(draw(st.booleans()), draw(st.floats(0, 100)), draw(labels), executions, agents,
                    draw(st.none() | st.integers(0, 10**6)), errors)


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_collector_families_render_byte_for_byte_like_client_python(snapshot: Snapshot) -> None:
    families = list(ExecWatchdogCollector(lambda: snapshot).collect())
    assert render_text(families) == expected(families)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(labels, labels, numbers), max_size=5), st.text(max_size=30))
def test_any_gauge_or_counter_family_renders_like_client_python(
        samples: list[tuple[str, str, float]], doc: str) -> None:
    gauge = GaugeMetricFamily("g_seconds", doc, labels=["a", "b"])
    counter = CounterMetricFamily("c_total", doc, labels=["a", "b"])
    plain = GaugeMetricFamily("plain", doc)
    for a, b, value in samples:
        gauge.add_metric([a, b], value)
        counter.add_metric([a, b], abs(value) if value == value else 0)
    plain.add_metric([], samples[0][2] if samples else 0)
    families: list[Metric] = [gauge, counter, plain]
    assert render_text(families) == expected(families)


def test_families_outside_the_fast_shape_are_left_to_client_python() -> None:
    registry = CollectorRegistry()
    Histogram("h_seconds", "a histogram", registry=registry).observe(0.3)
    Counter("with_created", "counter with _created", ["x"], registry=registry).labels("y").inc()
    Gauge("unsorted", "labels not in name order", ["zeta", "alpha"], registry=registry).labels("1", "2").set(3)
    families = list(registry.collect())
    assert render_text(families) == expected(families)


def test_served_body_parses_and_includes_process_metrics() -> None:
    snapshot = Snapshot(True, 0.1, "v", (ExecutionFacts("a", "e", "s", 1.5, 60, True),), (), 0, {})
    names = {s.name for f in text_string_to_metric_families(render(snapshot).decode()) for s in f.samples}
    assert "exec_watchdog_execution_runtime_seconds" in names
    assert "process_resident_memory_bytes" in names
