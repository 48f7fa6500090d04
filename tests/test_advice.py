"""A month of history: the exporter's incremental reads, the recording rules (promtool) and
`exec-watchdog advise` give the same advice, and both agree with a reference computed from the raw rows."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exec_watchdog.advise import collect, sql_statements
from exec_watchdog.alerts import advice, rules, timeout_rules
from exec_watchdog.alerts.profiles import load_profile
from exec_watchdog.common import contract
from exec_watchdog.common.contract import ExporterMetric as names
from exec_watchdog.exporter.history import DURATION_BUCKETS, RunHistory
from exec_watchdog.platform_access.database import create_engine, create_platform_tables
from exec_watchdog.platform_access.schema import agent_ownership, agent_schedules, schedule_executions
from exec_watchdog.platform_access.timestamps import format_utc, parse_utc, utcnow
from exec_watchdog.simulated_platform.schedules import PRODUCTION, SimSchedule, history_rows
from tests.test_alerts import require_tool, run

HOUR = timedelta(hours=1)
DAYS = 30
RARE = SimSchedule("rare", 3600, 3 * 86400, lambda rng: rng.uniform(100, 200))
PLACED = [(PRODUCTION[0], "alpha"), (PRODUCTION[1], "alpha"), (PRODUCTION[2], "beta"), (PRODUCTION[3], "beta"),
          (RARE, "gamma")]


@dataclasses.dataclass
class Month:
    engine: sa.Engine
    end: datetime
    rows: list[dict[str, Any]]
    samples: dict[str, list[float]]  # series (text) -> value at every hour 0..DAYS*24
    history: RunHistory


def _series_key(family_sample: Any) -> str | None:
    name: str = family_sample.name
    labels = family_sample.labels
    if name.startswith(names.SCHEDULE_RUN_DURATION) and labels.get("status") != "success":
        return None
    if not (name.startswith(names.SCHEDULE_RUN_DURATION) or name in (
            names.SCHEDULE_RUNS_ENDED_BY_WATCHDOG, names.SCHEDULE_TIMEOUT, names.SCHEDULE_SUCCESSFUL_RUNS_BEFORE_WINDOW,
            names.SCHEDULE_RUNS_ENDED_BEFORE_WINDOW)) or name.endswith("_sum"):
        return None
    labels = {**labels, "job": "exec-watchdog-exporter", "instance": "exporter:9463"}
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _samples(exposition: bytes) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            key = _series_key(sample)
            if key is not None:
                out[key] = sample.value
    return out


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Month]:
    """A month of runs, written hour by hour while the exporter reads incrementally every hour."""
    engine = create_engine(f"sqlite:///{tmp_path_factory.mktemp('month') / 'trinity.db'}")
    create_platform_tables(engine)
    end = utcnow().replace(microsecond=0)
    start = end - timedelta(days=DAYS)
    rows = list(history_rows(PLACED, start - timedelta(days=2), end))
    rows = [r for r in rows if parse_utc(r["completed_at"]) <= end]
    with engine.begin() as conn:
        for agent in ("alpha", "beta", "gamma"):
            conn.execute(sa.insert(agent_ownership).values(agent_name=agent, execution_timeout_seconds=3600))
        for schedule, agent in PLACED:
            conn.execute(sa.insert(agent_schedules).values(
                id=schedule.schedule_id(agent), agent_name=agent, name=schedule.name,
                timeout_seconds=schedule.timeout_seconds))
    clock = [start]
    history = RunHistory(engine, clock=lambda: clock[0])
    samples: dict[str, list[float]] = defaultdict(list)
    pending = iter(rows)
    row = next(pending, None)
    for hour in range(DAYS * 24 + 1):
        clock[0] = start + hour * HOUR
        batch = []
        while row is not None and parse_utc(row["completed_at"]) <= clock[0]:
            batch.append(row)
            row = next(pending, None)
        if batch:
            with engine.begin() as conn:
                conn.execute(sa.insert(schedule_executions), batch)
        history.read()
        for key, value in _samples(history.exposition()).items():
            samples[key].extend([0.0] * (hour - len(samples[key])))  # absent before its first run
            samples[key].append(value)
    yield Month(engine, end, rows, dict(samples), history)
    engine.dispose()


def _in_window(month: Month, window: timedelta) -> list[dict[str, Any]]:
    return [r for r in month.rows if month.end - window < parse_utc(r["completed_at"]) <= month.end]


def _exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def test_incremental_reads_count_every_completed_row_once_and_a_restart_publishes_the_same(month: Month) -> None:
    successes: dict[str, int] = defaultdict(int)
    for r in month.rows:
        if r["status"] == "success":
            successes[r["schedule_id"]] += 1
    counted = {k: v[-1] for k, v in month.samples.items()
               if k.startswith(f"{names.SCHEDULE_RUN_DURATION}_count")}
    assert sorted(counted.values()) == sorted(float(n) for n in successes.values())
    restarted = RunHistory(month.engine)
    restarted.read()
    assert _samples(restarted.exposition()) == _samples(month.history.exposition())


def test_cli_advice_agrees_with_a_reference_computed_from_the_raw_rows(month: Month) -> None:
    profile = load_profile("production")
    window = timedelta(seconds=profile.seconds("advice_window"))
    with month.engine.connect() as conn:
        advices = {a.schedule_id: a for a in collect(conn, window=window, min_runs=profile.advice_min_runs,
                                                     now=month.end)}
    rows = _in_window(month, window)
    for schedule, agent in PLACED:
        sid = schedule.schedule_id(agent)
        durations = [r["duration_ms"] / 1000 for r in rows if r["schedule_id"] == sid and r["status"] == "success"]
        got = advices[sid]
        assert got.runs == len(durations), sid
        assert got.current_timeout == schedule.timeout_seconds
        if len(durations) < profile.advice_min_runs:
            assert got.advised is None and "needs" in got.why, sid
            continue
        exact = _exact_quantile(durations, 0.99)
        upper = next(b for b in DURATION_BUCKETS if exact <= b)
        lower = max([0.0, *(b for b in DURATION_BUCKETS if b < exact)])
        assert lower <= got.quantiles[0.99] <= upper, (sid, exact, got.quantiles)
        assert got.advised is not None
        assert advice.advised_timeout(lower) <= got.advised <= advice.advised_timeout(upper), sid
    assert advices["too_tight-beta"].why.startswith("too tight")
    assert advices["fast-alpha"].why.startswith("too loose")
    assert advices["slow-alpha"].why.startswith("fits")


def _description_value(value: float) -> str:
    return f"{value:.0f}"


def test_recording_rules_and_alerts_on_a_month_of_history_agree_with_the_cli(month: Month, tmp_path: Path) -> None:
    """promtool evaluates the production rules (7-day window) hourly over the month's series."""
    production = load_profile("production")
    profile = dataclasses.replace(production, evaluation_interval="1h")
    window = timedelta(seconds=profile.seconds("advice_window"))
    with month.engine.connect() as conn:
        advices = collect(conn, window=window, min_runs=profile.advice_min_runs, now=month.end)
    at = f"{DAYS * 24}h"
    expr_tests: list[dict[str, Any]] = []
    for a in advices:
        labels = f'agent="{a.agent}",schedule_id="{a.schedule_id}"'
        expr_tests.append({"expr": f"{timeout_rules.RUNS}{{{labels}}}", "eval_time": at,
                           "exp_samples": [{"labels": f"{timeout_rules.RUNS}{{{labels}}}", "value": a.runs}]})
        advised = [] if a.advised is None else [{"labels": f"{timeout_rules.ADVISED}{{{labels}}}",
                                                 "value": a.advised}]
        expr_tests.append({"expr": f"{timeout_rules.ADVISED}{{{labels}}}", "eval_time": at, "exp_samples": advised})
        for q, value in a.quantiles.items():
            selector = f'{timeout_rules.QUANTILE}{{{labels},quantile="{q:g}"}}'
            expr_tests.append({"expr": selector, "eval_time": at,
                               "exp_samples": [{"labels": selector, "value": value}]})
    by_id = {a.schedule_id: a for a in advices}
    tight, loose = by_id["too_tight-beta"], by_id["fast-alpha"]
    assert tight.advised is not None and loose.advised is not None
    terminated = sum(1 for r in _in_window(month, window)
                     if r["schedule_id"] == "too_tight-beta" and "auto-terminated" in (r.get("error") or ""))
    assert terminated > 0
    how = (f"p99 x {advice.MARGIN:g}, rounded up to {advice.ROUND_TO_SECONDS} s, within "
           f"[{advice.MIN_TIMEOUT_SECONDS} s, {advice.MAX_TIMEOUT_SECONDS} s]")
    runbook = production.runbook_url
    alert_tests = [
        {"eval_time": at, "alertname": contract.TIMEOUT_TOO_TIGHT, "exp_alerts": [{
            "exp_labels": {"agent": "beta", "schedule_id": "too_tight-beta", "severity": "warning"},
            "exp_annotations": {
                "summary": "A schedule's timeout is killing runs that would have succeeded.",
                "description": (
                    f"Schedule too_tight-beta on agent beta: the watchdog auto-terminated {terminated} of its runs in "
                    f"the last 7d, while its successful runs' p99 is {_description_value(tight.quantiles[0.99])} s "
                    f"against a timeout of 600 s. Advised timeout: {tight.advised} s ({how})."),
                "runbook_url": f"{runbook}#{contract.TIMEOUT_TOO_TIGHT.lower()}"}}]},
        {"eval_time": at, "alertname": contract.TIMEOUT_TOO_LOOSE, "exp_alerts": [{
            "exp_labels": {"agent": "alpha", "schedule_id": "fast-alpha", "severity": "warning"},
            "exp_annotations": {
                "summary": "A schedule's timeout is far above its longest successful runs.",
                "description": (
                    f"Schedule fast-alpha on agent alpha has a timeout of 3600 s, while its successful runs' p99 "
                    f"over the last 7d is {_description_value(loose.quantiles[0.99])} s: a hung run holds its slot "
                    f"that long before the watchdog ends it. Advised timeout: {loose.advised} s ({how})."),
                "runbook_url": f"{runbook}#{contract.TIMEOUT_TOO_LOOSE.lower()}"}}]},
    ]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules.rule_groups(profile), sort_keys=False))
    series = [{"series": key, "values": " ".join(f"{v:g}" for v in values)} for key, values in month.samples.items()]
    test = {"rule_files": ["rules.yml"], "evaluation_interval": "1h", "tests": [{
        "name": "a month of history", "interval": "1h", "input_series": series,
        "promql_expr_test": expr_tests, "alert_rule_test": alert_tests}]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False, width=1 << 20))
    result = run(require_tool("promtool"), "test", "rules", "test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


# --- the command ----------------------------------------------------------------------------------

def _advise(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exec_watchdog", "advise", *argv], capture_output=True, text=True,
                          timeout=120, check=False)


def _table_rows(engine: sa.Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(agent_schedules).order_by(agent_schedules.c.id))]


def test_advise_prints_a_table_json_and_sql_and_never_writes(month: Month) -> None:
    url = month.engine.url.render_as_string(hide_password=False)
    before = _table_rows(month.engine)
    table = _advise("--database-url", url)
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[0].split()
    assert header == ["schedule", "agent", "runs", "p50", "p95", "p99", "current", "advised", "why"]
    assert any(line.startswith("too_tight-beta") and "too tight" in line for line in table.stdout.splitlines())
    as_json = json.loads(_advise("--database-url", url, "--format", "json").stdout)
    tight = next(a for a in as_json if a["schedule_id"] == "too_tight-beta")
    assert set(tight) == {"agent", "schedule_id", "runs", "p50", "p95", "p99", "current_timeout", "advised", "why"}
    assert tight["current_timeout"] == 600 and tight["advised"] > 600
    sql = _advise("--database-url", url, "--sql").stdout
    expected = "UPDATE agent_schedules SET timeout_seconds = %d WHERE id = 'too_tight-beta' AND agent_name = 'beta';"
    assert expected % tight["advised"] in sql
    assert "rare-gamma" not in sql  # no advice from too few runs
    assert _table_rows(month.engine) == before


def test_printed_sql_updates_exactly_the_schedule_even_with_a_hostile_id(tmp_path: Path) -> None:
    """Run the printed statements on a real SQLite database: quotes and line breaks stay data."""
    hostile = "x';\nDROP TABLE agent_schedules; --"
    engine = create_engine(f"sqlite:///{tmp_path / 'trinity.db'}")
    create_platform_tables(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(agent_schedules).values(id=hostile, agent_name="a1", name="h", timeout_seconds=600))
        conn.execute(sa.insert(agent_schedules).values(id="other", agent_name="a1", name="o", timeout_seconds=600))
    text = sql_statements([advice.Advice("a1", hostile, 30, {0.99: 10.0}, 600, 60, "too loose\nDROP TABLE x;")])
    raw = engine.raw_connection()
    try:
        raw.executescript(text)
    finally:
        raw.close()
    with engine.connect() as conn:
        timeouts = dict(conn.execute(sa.select(agent_schedules.c.id, agent_schedules.c.timeout_seconds)).all())
    assert timeouts == {hostile: 60, "other": 600}
    engine.dispose()


@pytest.mark.parametrize(("argv", "message"), [
    (["--database-url", "mysql://nope/x"], "unsupported database"),
    (["--profile", "staging"], "invalid choice"),
])
def test_advise_refuses_bad_input_with_a_clear_message(argv: list[str], message: str) -> None:
    result = _advise(*argv)
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize("url", ["sqlite:///{dir}/missing.db", "sqlite:///file:{dir}/missing.db?mode=ro&uri=true"])
def test_advise_on_a_missing_sqlite_file_says_it_does_not_exist_and_creates_nothing(tmp_path: Path, url: str) -> None:
    result = _advise("--database-url", url.format(dir=tmp_path))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "no such table" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def _psql_url(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.mark.parametrize("conforming", ["on", "off"])
def test_printed_sql_for_postgresql_updates_only_the_schedule_whatever_standard_conforming_strings(
        postgres_url: str, conforming: str) -> None:
    """`advise --sql` on PostgreSQL, run with psql on a server with standard_conforming_strings on or off
    (legacy): a hostile schedule id with a backslash before its quote stays data."""
    hostile = "x\\'; DELETE FROM schedule_executions; UPDATE agent_schedules SET timeout_seconds = 1; --\\"
    engine = create_engine(postgres_url)
    create_platform_tables(engine)
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(sa.insert(agent_ownership).values(agent_name="a1", execution_timeout_seconds=3600))
        conn.execute(sa.insert(agent_schedules).values(id=hostile, agent_name="a1", name="h", timeout_seconds=600))
        conn.execute(sa.insert(agent_schedules).values(id="other", agent_name="a1", name="o", timeout_seconds=600))
        conn.execute(sa.insert(schedule_executions), [
            {"id": f"run-{i}", "schedule_id": hostile, "agent_name": "a1", "status": "success", "message": "m",
             "triggered_by": "schedule", "started_at": format_utc(now - timedelta(seconds=60 + i)),
             "completed_at": format_utc(now - timedelta(seconds=50 + i)), "duration_ms": 10_000}
            for i in range(6)])
    sql = _advise("--database-url", postgres_url, "--profile", "fast", "--sql")
    assert sql.returncode == 0, sql.stderr
    assert "UPDATE agent_schedules SET timeout_seconds = 60 WHERE id = E'" in sql.stdout
    result = subprocess.run(
        [require_tool("psql"), "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "-d", _psql_url(postgres_url)],
        input=sql.stdout, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PGOPTIONS": f"-c standard_conforming_strings={conforming}"})
    assert result.returncode == 0, result.stderr
    with engine.connect() as conn:
        timeouts = dict(conn.execute(sa.select(agent_schedules.c.id, agent_schedules.c.timeout_seconds)).all())
        runs = conn.execute(sa.select(sa.func.count()).select_from(schedule_executions)).scalar_one()
    assert timeouts == {hostile: 60, "other": 600}
    assert runs == 6
    engine.dispose()


def test_advise_leaves_out_the_schedules_of_a_soft_deleted_agent(engine: sa.Engine) -> None:
    create_platform_tables(engine)
    now = utcnow()
    with engine.begin() as conn:
        for agent, deleted in (("a1", None), ("gone", format_utc(now))):
            conn.execute(sa.insert(agent_ownership).values(agent_name=agent, execution_timeout_seconds=3600,
                                                           deleted_at=deleted))
            conn.execute(sa.insert(agent_schedules).values(id="s-" + agent, agent_name=agent, name="s",
                                                           timeout_seconds=600))
            conn.execute(sa.insert(schedule_executions), [
                {"id": f"{agent}-{i}", "schedule_id": "s-" + agent, "agent_name": agent, "status": "success",
                 "message": "m", "triggered_by": "schedule", "started_at": format_utc(now - timedelta(seconds=90)),
                 "completed_at": format_utc(now - timedelta(seconds=60)), "duration_ms": 30_000}
                for i in range(3)])
    with engine.connect() as conn:
        advices = collect(conn, window=HOUR, min_runs=1, now=now)
    assert [(a.agent, a.schedule_id, a.runs) for a in advices] == [("a1", "s-a1", 3)]


def test_advise_counts_space_separated_completion_times_at_the_window_edge(engine: sa.Engine) -> None:
    """Runs written `2026-12-01 09:01:00` (space, naive) just inside the window count; just outside do not."""
    create_platform_tables(engine)
    now = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
    inside = ["2026-12-01 09:00:01", "2026-12-01 09:30:00", "2026-12-01T09:00:01Z", "2026-12-01T04:30:00-05:00"]
    outside = ["2026-12-01 08:59:59", "2026-12-01 09:00:00", "2026-12-01T08:59:00Z", "2026-12-01 10:00:01"]
    with engine.begin() as conn:
        conn.execute(sa.insert(schedule_executions), [
            {"id": f"r{i}", "schedule_id": "s1", "agent_name": "a1", "status": "success", "message": "m",
             "triggered_by": "schedule", "started_at": "2026-12-01T00:00:00Z", "completed_at": at,
             "duration_ms": 30_000} for i, at in enumerate(inside + outside)])
    with engine.connect() as conn:
        advices = collect(conn, window=HOUR, min_runs=1, now=now)
    assert [(a.schedule_id, a.runs) for a in advices] == [("s1", len(inside))]


def test_rules_over_a_fresh_exporters_first_scrape_give_the_clis_advice(month: Month, tmp_path: Path) -> None:
    """Right after installation (one scrape of a month of history, no Prometheus history at all) the
    recording rules count only the window's runs, as `exec-watchdog advise` does."""
    profile = load_profile("production")
    window = timedelta(seconds=profile.seconds("advice_window"))
    fresh = RunHistory(month.engine, clock=lambda: month.end)
    fresh.read()
    with month.engine.connect() as conn:
        advices = collect(conn, window=window, min_runs=profile.advice_min_runs, now=month.end)
    assert any(a.runs < sum(1 for r in month.rows if r["schedule_id"] == a.schedule_id and r["status"] == "success")
               for a in advices)  # the month holds runs older than the window
    expr_tests: list[dict[str, Any]] = []
    for a in advices:
        labels = f'agent="{a.agent}",schedule_id="{a.schedule_id}"'
        expr_tests.append({"expr": f"{timeout_rules.RUNS}{{{labels}}}", "eval_time": "0s",
                           "exp_samples": [{"labels": f"{timeout_rules.RUNS}{{{labels}}}", "value": a.runs}]})
        advised = [] if a.advised is None else [{"labels": f"{timeout_rules.ADVISED}{{{labels}}}",
                                                 "value": a.advised}]
        expr_tests.append({"expr": f"{timeout_rules.ADVISED}{{{labels}}}", "eval_time": "0s", "exp_samples": advised})
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules.rule_groups(profile), sort_keys=False))
    series = [{"series": key, "values": f"{value:g}"} for key, value in _samples(fresh.exposition()).items()]
    test = {"rule_files": ["rules.yml"], "evaluation_interval": "15s", "tests": [{
        "name": "a fresh exporter", "interval": "15s", "input_series": series, "promql_expr_test": expr_tests}]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False, width=1 << 20))
    result = run(require_tool("promtool"), "test", "rules", "test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
