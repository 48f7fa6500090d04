"""End to end, Trinity's cleanup sweeps and the fleet guard: simulated platform -> exporter -> real
Prometheus -> real Alertmanager -> remediator (fast profile, SQLite, Redis).

Agents have a 6 s own timeout (agent_ownership), so a run they do not list is stale after
6 + 3 s (the fast profile's grace). Four agents: one removed for good is a quarter of the fleet
(below the guard), a partition takes all four (above it).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pytest

from exec_watchdog.remediator import texts
from exec_watchdog.testbed.waiting import eventually, holds
from tests.pipeline_harness import Pipeline, running_pipeline

pytestmark = pytest.mark.timeout(600)

AGENT_TIMEOUT = 6
STALE_WINDOW = AGENT_TIMEOUT + 3  # stale_grace_seconds, fast profile
AGENTS = [f"agent-{i:03d}" for i in range(1, 5)]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Pipeline]:
    workdir = tmp_path_factory.mktemp("e2e-cleanup")
    with running_pipeline(workdir / "stack", f"sqlite:///{workdir / 'trinity.db'}", redis_url=redis_url,
                          agents=len(AGENTS), agent_timeout_seconds=AGENT_TIMEOUT) as p:
        yield p


def test_a_partition_of_the_whole_fleet_fails_nothing_and_pages_a_person(pipeline: Pipeline) -> None:
    """Every agent stops answering the watchdog while the work goes on: the fleet guard fires and
    holds the stale and no-session sweeps, 0 rows are failed; once healed, runs still executing go on."""
    p = pipeline
    working = [p.start(agent, 600) for agent in AGENTS for _ in range(2)]
    eventually(lambda: len(p.series("exec_watchdog_execution_agent_known == 1")) >= len(working), 20,
               "the agents list their runs")
    p.partition()
    sessionless = [p.start(agent, 0, "no_session") for agent in AGENTS]
    eventually(lambda: p.alerts("ExecWatchdogFleetUnreachable"), 20, "the fleet guard fires in Alertmanager")
    # Past the stale window and the no-session age, and past both rules' `for`: they fire in
    # Prometheus, Alertmanager inhibits them, nothing is failed.
    eventually(lambda: len(p.series('ALERTS{alertname="ExecWatchdogExecutionStale", alertstate="firing"}'))
               >= len(working), STALE_WINDOW + 20, "the stale rule fires for every run in Prometheus")
    eventually(lambda: len(p.series('ALERTS{alertname="ExecWatchdogExecutionNoSession", alertstate="firing"}'))
               >= len(sessionless), 20, "the no-session rule fires for every sessionless run in Prometheus")
    everything = [s.execution_id for s in working + sessionless]
    holds(lambda: all(p.status(e) == "running" for e in everything), 6, "no row is failed during the partition")
    stale_alerts = p.alerts("ExecWatchdogExecutionStale") + p.alerts("ExecWatchdogExecutionNoSession")
    assert stale_alerts and all(a["status"]["state"] == "suppressed" for a in stale_alerts), stale_alerts
    assert all(p.decisions(e) == [] for e in everything)  # never even reached the remediator

    p.heal()
    eventually(lambda: not p.alerts("ExecWatchdogFleetUnreachable"), 30, "the fleet guard resolves")
    # The runs the agents still execute stay. The runs that never launched end once the agents answer
    # without them: through the orphan path, or (the fast profile's stale window being seconds, not
    # Trinity's hour) the stale alert held during the partition, whichever comes first, exactly once;
    # both are texts Trinity's own cycle writes (its watchdog, then its stale sweep).
    for s in sessionless:
        row = eventually(partial(p.failed, s.execution_id), 30, "a sessionless run is failed once answered")
        assert row.error in (texts.orphan_text(s.agent, reports_pending=True, no_retained_result=True),
                             texts.stale_text(STALE_WINDOW))
        eventually(partial(_announced_once, p, s.execution_id), 10, "the recovery is announced once")
    holds(lambda: all(p.status(s.execution_id) == "running" for s in working), 3,
          "the runs that kept executing are never failed")


def test_an_agent_gone_for_good_has_its_runs_ended_by_the_stale_and_no_session_sweeps(pipeline: Pipeline) -> None:
    p = pipeline
    gone, other = AGENTS[0], AGENTS[1]
    dispatched = p.start(gone, 600)
    kept = p.start(other, 600)
    eventually(lambda: p.series(f'exec_watchdog_execution_agent_known{{execution_id="{dispatched.execution_id}"}}'
                                " == 1"), 20, "the agent lists its run")
    p.remove_agent(gone)
    silent = p.start(gone, 0, "no_session")
    row = eventually(lambda: p.failed(silent.execution_id), 40, "the silent launch failure is failed")
    assert row.error == texts.no_session_text(5)  # no_session_min_age_seconds, fast profile
    assert row.duration_ms is None
    row = eventually(lambda: p.failed(dispatched.execution_id), STALE_WINDOW + 40, "the stale run is failed")
    assert row.error == texts.stale_text(STALE_WINDOW)
    assert row.duration_ms is None
    for execution_id, action in ((silent.execution_id, "no_session_failed"), (dispatched.execution_id, "stale_failed")):
        eventually(partial(_released, p, gone, execution_id), 10, "the slot is released")
        eventually(partial(_announced_once, p, execution_id), 10, "the recovery is announced")
        [event] = p.announcements(execution_id)
        assert event["action"] == action
    assert p.alerts("ExecWatchdogFleetUnreachable") == []  # one agent of four is not a partition
    assert p.status(kept.execution_id) == "running"


def _released(p: Pipeline, agent: str, execution_id: str) -> bool:
    return execution_id not in p.held(agent)


def _announced_once(p: Pipeline, execution_id: str) -> bool:
    return len(p.announcements(execution_id)) == 1
