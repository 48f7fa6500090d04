"""End to end, highly available: two clustered Alertmanagers (both notified by Prometheus) and two
remediator replicas on one PostgreSQL, each Alertmanager sending every notification to both
replicas. Duplicates are certain; the effect must still be exactly one transition, one slot
release and one announcement per execution.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from exec_watchdog.remediator.audit import recoveries
from exec_watchdog.testbed.waiting import eventually, holds
from tests.pipeline_harness import Pipeline, running_pipeline

pytestmark = pytest.mark.timeout(600)

PEER_TIMEOUT = 15.0  # Alertmanager's default --cluster.peer-timeout: the second instance sends after it


@pytest.fixture
def ha_pipeline(tmp_path: Path, postgres_url: str, redis_url: str) -> Iterator[Pipeline]:
    with running_pipeline(tmp_path / "stack", postgres_url, redis_url=redis_url, agents=3, alertmanagers=2,
                          remediators=2) as p:
        yield p


def _received_firing(alertmanager_url: str) -> float:
    text = httpx.get(f"{alertmanager_url}/metrics", timeout=5).text
    match = re.search(r'^alertmanager_alerts_received_total\{status="firing"(?:,version="v2")?\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_two_alertmanagers_and_two_replicas_act_exactly_once(ha_pipeline: Pipeline) -> None:
    p = ha_pipeline
    assert p.redis_feed is not None
    p.set_timeout("agent-003", 4)
    orphans = [p.start(agent, 600) for agent in ("agent-001", "agent-002") for _ in range(3)]
    overdue = [p.start("agent-003", 3600, "hang") for _ in range(2)]
    p.restart_agent("agent-001")
    p.restart_agent("agent-002")
    runs = orphans + overdue

    for run in runs:
        eventually(partial(p.failed, run.execution_id), 40, f"{run.execution_id} is failed")
    # The announcement follows the transition (slot release first): on a loaded machine it can trail
    # the row by a moment, so wait for it before judging that no second one comes.
    eventually(lambda: all(p.announcements(r.execution_id) for r in runs), 30, "every recovery announced")
    # Stale and duplicate deliveries keep coming for a while (the second Alertmanager waits a peer
    # timeout before it sends what the first one may already have sent): none may act again.
    holds(lambda: all(len(p.announcements(r.execution_id)) == 1 for r in runs), PEER_TIMEOUT + 2,
          "exactly one WebSocket announcement per execution, across both replicas")

    with p.engine.connect() as conn:
        outbox = {r.execution_id: r for r in conn.execute(sa.select(recoveries))}
    replicas_heard: set[str] = set()
    for run in runs:
        decisions = p.decisions(run.execution_id)
        replicas_heard |= {d["replica"] for d in decisions}
        assert [d["outcome"] for d in decisions].count("recovered") == 1, decisions
        assert len(decisions) >= 2, "each replica gets every notification"
        row = outbox[run.execution_id]
        assert row.slot_released_at is not None and row.announced_at is not None
        assert run.execution_id not in p.held(run.agent)
        assert len(p.redis_feed.for_execution(run.execution_id)) == 1
        action = "auto_terminated" if run in overdue else "orphan_recovered"
        assert p.announcements(run.execution_id)[0]["action"] == action
    assert replicas_heard == set(p.stack.replica_ids)
    assert_evidence_names_each_delivery(p, [run.execution_id for run in runs])
    # Prometheus notified both Alertmanagers; both run as one cluster.
    for url in p.stack.alertmanager_urls:
        assert _received_firing(url) > 0, url
        peers = httpx.get(f"{url}/api/v2/status", timeout=5).json()["cluster"]["peers"]
        assert len(peers) == 2
    p.stack.children.check()


@pytest.fixture
def ha_pipeline_5s(tmp_path: Path, postgres_url: str, redis_url: str) -> Iterator[Pipeline]:
    with running_pipeline(tmp_path / "stack", postgres_url, redis_url=redis_url, agents=8, alertmanagers=2,
                          remediators=2, remediation_group_interval="5s") as p:
        yield p


def test_twelve_overdue_and_twelve_orphaned_are_terminated_and_recovered_exactly_once(
        ha_pipeline_5s: Pipeline) -> None:
    """Two clustered Alertmanagers (group_interval 5 s), both notifying both replicas: each overdue
    process gets one SIGINT (the action claim), each execution one recovery and one announcement."""
    p = ha_pipeline_5s
    assert p.redis_feed is not None
    overdue_agents = ["agent-005", "agent-006", "agent-007", "agent-008"]
    for agent in overdue_agents:
        p.set_timeout(agent, 4)
    orphans = [p.start(agent, 600) for agent in ("agent-001", "agent-002", "agent-003", "agent-004")
               for _ in range(3)]
    overdue = [p.start(agent, 3600, "hang") for agent in overdue_agents for _ in range(3)]
    for agent in ("agent-001", "agent-002", "agent-003", "agent-004"):
        p.restart_agent(agent)
    runs = orphans + overdue

    for run in runs:
        eventually(partial(p.failed, run.execution_id), 90, f"{run.execution_id} is failed")
    double_terminates = {r.execution_id: n for r in overdue if (n := p.sigints(r.execution_id, r.agent)) != 1}
    assert double_terminates == {}, "each overdue process got exactly one SIGINT"
    holds(lambda: all(len(p.announcements(r.execution_id)) == 1 for r in runs), PEER_TIMEOUT + 6,
          "exactly one WebSocket announcement per execution, across both replicas")
    for run in runs:
        assert [d["outcome"] for d in p.decisions(run.execution_id)].count("recovered") == 1
        assert len(p.redis_feed.for_execution(run.execution_id)) == 1
        assert run.execution_id not in p.held(run.agent)
    p.stack.children.check()


def assert_evidence_names_each_delivery(p: Pipeline, execution_ids: list[str]) -> None:
    """Each decision's evidence says which Alertmanager delivered the alert, and each replica counts
    its own deliveries of an alert 1, 2, 3...; both Alertmanagers show up."""
    delivered_by: set[str] = set()
    for execution_id in execution_ids:
        # Any replica tells the whole story: it is built from the shared database.
        story = p.http.get(f"{p.stack.remediator_urls[-1]}/api/v1/executions/{execution_id}",
                           headers={"Authorization": f"Bearer {p.stack.token}"}).json()
        counted: dict[tuple[str, str, str], list[int]] = {}
        for event in story["timeline"]:
            if event["kind"] != "decision":
                continue
            evidence = event["decision"]["evidence"]
            delivered_by.add(evidence["delivery"]["alertmanager"])
            instance = (evidence["replica"], evidence["alert"]["fingerprint"], evidence["alert"]["starts_at"])
            counted.setdefault(instance, []).append(evidence["delivery"]["deliveries_seen"])
        for instance, seen in counted.items():
            assert sorted(seen) == list(range(1, len(seen) + 1)), (execution_id, instance, seen)
    assert delivered_by == set(p.stack.alertmanager_urls)
