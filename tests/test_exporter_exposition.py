"""The snapshot renderer writes exactly what client_python writes for tests/exposition_oracle.py's collector."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exec_watchdog.exporter.app import render
from exec_watchdog.exporter.exposition import render_snapshot
from exec_watchdog.exporter.snapshot import (
    POLL_ERROR_REASONS,
    AgentFacts,
    ExecutionFacts,
    RegistryCounts,
    SlotFacts,
    Snapshot,
)
from tests.exposition_oracle import ExecWatchdogCollector

labels = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    executions = tuple(
        ExecutionFacts(draw(labels), draw(labels), draw(labels), draw(st.floats()), draw(st.integers(0, 10**9)),
                       draw(st.sampled_from([True, False, None])), draw(st.sampled_from([True, False, None])),
                       draw(st.sampled_from([True, False, None])))
        for _ in range(draw(st.integers(0, 5))))
    agents = tuple(
        AgentFacts(draw(labels), draw(st.booleans()),
                   draw(st.none() | st.builds(RegistryCounts, st.integers(0, 99), st.integers(0, 99),
                                              st.integers(0, 99))),
                   draw(st.none() | st.integers(0, 10**6)), draw(st.integers(1, 1000)))
        for _ in range(draw(st.integers(0, 3))))
    errors = draw(st.dictionaries(st.tuples(labels, labels), st.integers(0, 10**9), max_size=3))
    slots = tuple(SlotFacts(draw(labels), draw(labels), draw(st.floats()), draw(st.floats(0, 10**9)),
                            draw(st.booleans()))
                  for _ in range(draw(st.integers(0, 3))))
    return Snapshot(draw(st.booleans()), draw(st.floats(0, 100)), draw(labels), executions, agents,
                    draw(st.none() | st.integers(0, 10**6)), errors, slots, draw(st.none() | st.booleans()))


@settings(max_examples=400, deadline=None)
@given(snapshots())
def test_snapshot_renders_byte_for_byte_like_client_python_renders_the_collector(snapshot: Snapshot) -> None:
    registry = CollectorRegistry()
    registry.register(ExecWatchdogCollector(lambda: snapshot))
    assert render_snapshot(snapshot) == generate_latest(registry)


def test_a_full_snapshot_renders_like_client_python() -> None:
    executions = tuple(ExecutionFacts(f"agent-{n % 7}", f"exec-{n}", "__manual__" if n % 2 else f"s{n}",
                                      n * 1234.567, 3600, [True, False, None][n % 3]) for n in range(300))
    agents = tuple(AgentFacts(f"agent-{n}", n % 2 == 0, RegistryCounts(n, 1, 2) if n % 2 == 0 else None,
                              n if n != 3 else None, 3) for n in range(7))
    snapshot = Snapshot(True, 0.123, "0.1.0", executions, agents, 2,
                        {(f"agent-{n}", r): n for n in range(7) for r in POLL_ERROR_REASONS})
    registry = CollectorRegistry()
    registry.register(ExecWatchdogCollector(lambda: snapshot))
    assert render_snapshot(snapshot) == generate_latest(registry)


def test_served_body_parses_and_includes_process_metrics() -> None:
    snapshot = Snapshot(True, 0.1, "v", (ExecutionFacts("a", "e", "s", 1.5, 60, True),), (), 0, {})
    names = {s.name for f in text_string_to_metric_families(render(snapshot).decode()) for s in f.samples}
    assert "exec_watchdog_execution_runtime_seconds" in names
    assert "process_resident_memory_bytes" in names
