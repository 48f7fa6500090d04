"""The "Timeouts from evidence" panels show the right numbers, evaluated by the real PromQL engine
(`promtool test rules`) with the fast profile's recording rules on one schedule's series."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from exec_watchdog.alerts.profiles import load_profile
from exec_watchdog.alerts.render import render_rules
from exec_watchdog.alerts.timeout_rule_tests import SLOW, histogram_series, reference
from exec_watchdog.common.contract import ExporterMetric as names
from exec_watchdog.grafana import queries
from tests.test_alerts import require_tool

SCHEDULE = {"job": "exec-watchdog-exporter", "instance": "exporter:9463", "agent": "agent-a", "schedule_id": "nightly"}
OUT = '{agent="agent-a", schedule_id="nightly"}'


def _labels(extra: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in {**SCHEDULE, **extra}.items()) + "}"


def _expr_test(where: str, eval_time: str, samples: list[tuple[str, float]]) -> dict[str, Any]:
    return {"expr": dict(queries.labelled_queries())[where], "eval_time": eval_time,
            "exp_samples": [{"labels": labels, "value": value} for labels, value in samples]}


def test_timeout_panels_show_the_schedule_advice_and_the_runs_the_watchdog_ended(tmp_path: Path) -> None:
    profile = load_profile("fast")
    quantiles, advised = reference(SLOW)
    table = "panel 'Timeout advice per schedule'"
    series = [
        *histogram_series(profile, SLOW, "{n}x150"),
        {"series": f"{names.SCHEDULE_TIMEOUT}{_labels({})}", "values": "3000x150"},
        {"series": f"{names.SCHEDULE_RUNS_ENDED_BY_WATCHDOG}{_labels({'action': 'auto_terminated'})}",
         "values": "0x30 2x120"},
        {"series": names.HISTORY_READY + '{job="exec-watchdog-exporter", instance="exporter:9463"}',
         "values": "0 1x150"},
    ]
    tests = [
        _expr_test(f"{table} target A", "60s", [(f"exec_watchdog_schedule:successful_runs:window{OUT}", len(SLOW))]),
        _expr_test(f"{table} target D", "60s", [(OUT, quantiles[0.99])]),
        _expr_test(f"{table} target E", "60s", [(OUT, 3000)]),
        _expr_test(f"{table} target F", "60s", [(f"exec_watchdog_schedule:timeout_seconds:advised{OUT}", advised)]),
        _expr_test("panel 'Runs the watchdog ended' target A", "60s",
                   [('{action="auto_terminated", schedule_id="nightly"}', 2)]),
        _expr_test("panel 'Runs the watchdog ended' target A", "150s",
                   [('{action="auto_terminated", schedule_id="nightly"}', 0)]),
        _expr_test("panel 'Run history read' target A", "0s", [("{}", 0)]),
        _expr_test("panel 'Run history read' target A", "60s", [("{}", 1)]),
    ]
    (tmp_path / "rules.yml").write_text(render_rules("fast"))
    (tmp_path / "panels.test.yml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yml"], "evaluation_interval": profile.evaluation_interval,
        "tests": [{"interval": profile.evaluation_interval, "input_series": series, "promql_expr_test": tests}],
    }, sort_keys=False))
    result = subprocess.run([require_tool("promtool"), "test", "rules", "panels.test.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
