"""End to end: schedules with distinct runtimes on the live pipeline raise the timeout warnings.

Simulated schedules (simulated_platform/schedules.py, the demo's) run real processes; the
too-tight one has runs past its timeout that the watchdog auto-terminates. The exporter reads
the run history, the fast profile's recording rules advise, and Alertmanager routes
ExecWatchdogTimeoutTooTight to people (never to the remediator) with the advised value that
`exec-watchdog advise` computes from the same database. The new dashboard row's queries run on
the real Prometheus and return data.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest

from exec_watchdog.advise import collect
from exec_watchdog.alerts import timeout_rules
from exec_watchdog.alerts.alertmanager import OPERATOR_RECEIVER
from exec_watchdog.alerts.profiles import load_profile
from exec_watchdog.common import contract
from exec_watchdog.grafana.queries import labelled_queries
from exec_watchdog.platform_access.timestamps import utcnow
from exec_watchdog.simulated_platform.schedules import DEMO, place, register, run_schedules
from exec_watchdog.testbed.waiting import eventually
from tests.pipeline_harness import Pipeline, running_pipeline

pytestmark = pytest.mark.timeout(600)

ROW_PANELS = ("Timeout advice per schedule", "Runtime p99 against configured and advised timeout",
              "Runtime distribution of successful runs", "Runs the watchdog ended", "Run history read",
              "History read time", "Completed rows skipped")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Pipeline]:
    workdir = tmp_path_factory.mktemp("e2e-timeouts")
    with running_pipeline(workdir / "stack", f"sqlite:///{workdir / 'trinity.db'}", redis_url=redis_url,
                          agents=len(DEMO)) as p:
        placed = place(DEMO, p.platform.options.agent_names)
        register(p.engine, placed)
        runner = asyncio.run_coroutine_threadsafe(run_schedules(p.platform.scheduler, placed, 400, seed=15),
                                                  p.loop.loop)
        try:
            yield p
        finally:
            runner.cancel()


def _too_tight(p: Pipeline) -> list[dict[str, object]]:
    return [a for a in p.alerts(contract.TIMEOUT_TOO_TIGHT) if str(a["labels"]["schedule_id"]).startswith("too_tight")
            and a["status"]["state"] == "active"]


def test_a_too_tight_timeout_raises_the_warning_with_the_advised_value(pipeline: Pipeline) -> None:
    p = pipeline
    alerts = eventually(lambda: _too_tight(p), 240, "ExecWatchdogTimeoutTooTight fires for the too-tight schedule")
    alert = alerts[0]
    labels = alert["labels"]
    assert isinstance(labels, dict)
    assert labels["severity"] == "warning" and "remediation" not in labels
    assert [r["name"] for r in alert["receivers"]] == [OPERATOR_RECEIVER]  # type: ignore[attr-defined]
    description = str(alert["annotations"]["description"])  # type: ignore[index]
    match = re.search(r"auto-terminated (\d+) of its runs .* p99 is (\d+) s against a timeout of (\d+) s\. "
                      r"Advised timeout: (\d+) s", description)
    assert match, description
    terminated, p99, timeout, advised = (int(g) for g in match.groups())
    assert terminated >= 1 and timeout == 12 and p99 > 0.8 * 12
    # The same advice straight from the database (the command's code path).
    profile = load_profile("fast")
    with p.engine.connect() as conn:
        by_schedule = {a.schedule_id: a for a in collect(
            conn, window=timedelta(seconds=profile.seconds("advice_window")), min_runs=profile.advice_min_runs,
            now=utcnow())}
    from_database = by_schedule[str(labels["schedule_id"])]
    assert from_database.advised == advised
    recorded = p.series(f'{timeout_rules.ADVISED}{{schedule_id="{labels["schedule_id"]}"}}')
    assert [float(s["value"][1]) for s in recorded] == [advised]


def test_a_loose_timeout_raises_the_loose_warning(pipeline: Pipeline) -> None:
    alerts = eventually(lambda: [a for a in pipeline.alerts(contract.TIMEOUT_TOO_LOOSE)
                                 if str(a["labels"]["schedule_id"]).startswith("fast-")], 240,
                        "ExecWatchdogTimeoutTooLoose fires for the fast schedule under a one-hour timeout")
    assert "has a timeout of 3600 s" in str(alerts[0]["annotations"]["description"])


def test_the_timeout_panels_queries_return_data_on_the_real_prometheus(pipeline: Pipeline) -> None:
    p = pipeline
    eventually(lambda: p.series(timeout_rules.ADVISED), 240, "some schedule has an advised timeout")
    mine = [(where, expr) for where, expr in labelled_queries() if any(f"'{t}'" in where for t in ROW_PANELS)]
    assert len(mine) >= len(ROW_PANELS)
    empty = []
    for where, expr in mine:
        body = p.query(expr)
        assert body["status"] == "success", (where, expr, body)
        if not body["data"]["result"]:
            empty.append(f"{where}: {expr}")
    assert empty == []
