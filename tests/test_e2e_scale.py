"""End to end beyond one exporter and one Prometheus.

- Three exporter shards (``--shard K/3``) scraped by one Prometheus publish every execution exactly
  once, per-agent series once, also while one shard restarts and after the fleet is re-sharded
  3 -> 2 (no stale series); orphans on every shard are recovered exactly once, the restarting
  shard's as soon as it is back.
- Two Prometheus servers (own ``replica`` external label, dropped for alerts) evaluating the same
  rules into two clustered Alertmanagers: Alertmanager holds one alert per execution and the
  remediator recovers each exactly once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from exec_watchdog.common.contract import ORPHANED
from exec_watchdog.exporter.sharding import shard_of
from exec_watchdog.pipeline.children import Child
from exec_watchdog.pipeline.stack import Stack
from exec_watchdog.simulated_platform.scheduler import Started
from exec_watchdog.testbed.stack_children import kill_child, respawn_child, stack_child, wait_child_ready
from exec_watchdog.testbed.waiting import eventually, holds
from tests.pipeline_harness import Pipeline, running_pipeline

pytestmark = pytest.mark.timeout(600)

RUNTIME = "exec_watchdog_execution_runtime_seconds"
AGENTS = 6


def counted(p: Pipeline, by: str, expr: str = RUNTIME) -> dict[str, int]:
    """How many series Prometheus holds per ``by`` label value (all exporters together)."""
    return {s["metric"].get(by, ""): int(float(s["value"][1])) for s in p.series(f"count by ({by}) ({expr})")}


def once_each(p: Pipeline, ids: set[str]) -> bool:
    """Every id published exactly once, and nothing else."""
    counts = counted(p, "execution_id")
    return set(counts) == ids and set(counts.values()) == {1}


def recovered_once(p: Pipeline, run: Started) -> bool:
    return [d["outcome"] for d in p.decisions(run.execution_id)].count("recovered") == 1


def respawn_as(stack: Stack, name: str, shard: str) -> Child:
    """Start an exporter again as another shard (a StatefulSet scaled to another size)."""
    old = stack_child(stack, name)
    argv = list(old.argv)
    argv[argv.index("--shard") + 1] = shard
    old.stop(timeout=5.0)
    new = Child(old.name, argv, old.log_path, old.ready, cwd=old.cwd, env=old.env)
    stack.children.children[stack.children.children.index(old)] = new
    new.start()
    return new


@pytest.fixture
def sharded(tmp_path: Path, postgres_url: str, redis_url: str) -> Iterator[Pipeline]:
    with running_pipeline(tmp_path / "stack", postgres_url, redis_url=redis_url, agents=AGENTS,
                          exporter_shards=3) as p:
        yield p


def test_three_shards_cover_the_fleet_once_through_a_restart_and_a_reshard(sharded: Pipeline) -> None:
    p = sharded
    agents = p.platform.options.agent_names
    owner = {a: shard_of(a, 3) for a in agents}
    assert set(owner.values()) == {0, 1, 2}, "every shard must own an agent for this test to mean anything"
    long_runs = [p.start(agent, 600) for agent in agents for _ in range(2)]
    ids = {r.execution_id for r in long_runs}

    eventually(lambda: once_each(p, ids), 30, "every execution published by exactly one shard")
    assert counted(p, "agent", "exec_watchdog_agent_up") == dict.fromkeys(agents, 1)
    by_instance = counted(p, "instance")
    assert len(by_instance) == 3 and sum(by_instance.values()) == len(ids)

    # Shard 1 (exporter-2) restarts while agents on shard 1 and on shard 0 lose their runs.
    victim_agent = next(a for a in agents if owner[a] == 1)
    other_agent = next(a for a in agents if owner[a] == 0)
    orphans = [p.start(a, 600) for a in (victim_agent, other_agent) for _ in range(2)]
    ids |= {r.execution_id for r in orphans}
    eventually(lambda: once_each(p, ids), 30, "the new runs are published once")
    kill_child(p.stack, "exporter-2")
    p.restart_agent(victim_agent)
    p.restart_agent(other_agent)
    on_other = [r for r in orphans if r.agent == other_agent]
    on_victim = [r for r in orphans if r.agent == victim_agent]
    for run in on_other:
        eventually(partial(p.failed, run.execution_id), 40, f"{run.execution_id} (shard 0) is recovered")
    # Nothing of shard 1 is seen meanwhile, so none of its orphans can be acted on, and no
    # execution is published twice.
    assert all(p.status(r.execution_id) == "running" for r in on_victim)
    assert max(counted(p, "execution_id").values()) == 1
    wait_child_ready(respawn_child(p.stack, "exporter-2"))
    for run in on_victim:
        eventually(partial(p.failed, run.execution_id), 40, f"{run.execution_id} (shard 1) is recovered")
    for run in orphans:
        eventually(partial(recovered_once, p, run), 20, f"{run.execution_id} recovered exactly once")
    lost = {r.execution_id for r in long_runs if r.agent in (victim_agent, other_agent)}
    still_running = {r.execution_id for r in long_runs} - lost
    assert all(p.status(e) == "running" for e in still_running), "no run that kept going was failed"
    for execution_id in lost:
        eventually(partial(p.failed, execution_id), 40, f"{execution_id} (lost in the restart) is recovered")

    # Re-shard 3 -> 2: exporter-3 goes, the other two become shards 0/2 and 1/2. Whatever they
    # published before, each execution ends up published exactly once: no stale series.
    kill_child(p.stack, "exporter-3")
    wait_child_ready(respawn_as(p.stack, "exporter-1", "0/2"))
    wait_child_ready(respawn_as(p.stack, "exporter-2", "1/2"))
    eventually(lambda: once_each(p, still_running), 30, "after the re-shard every execution is published once")
    holds(lambda: once_each(p, still_running), 5, "and stays published once")
    assert counted(p, "agent", "exec_watchdog_agent_up") == dict.fromkeys(agents, 1)
    assert len(counted(p, "instance")) == 2
    p.stack.children.children.remove(stack_child(p.stack, "exporter-3"))  # killed on purpose
    p.stack.children.check()


@pytest.fixture
def two_prometheus(tmp_path: Path, postgres_url: str, redis_url: str) -> Iterator[Pipeline]:
    with running_pipeline(tmp_path / "stack", postgres_url, redis_url=redis_url, agents=3, alertmanagers=2,
                          prometheus_replicas=2) as p:
        yield p


def _notifications_sent(prometheus_url: str) -> float:
    text = httpx.get(f"{prometheus_url}/metrics", timeout=5).text
    return sum(float(v) for v in re.findall(r"^prometheus_notifications_sent_total\{[^}]*\} (\S+)$", text, re.M))


def test_two_prometheus_servers_make_one_recovery_per_execution(two_prometheus: Pipeline) -> None:
    p = two_prometheus
    orphans = [p.start(agent, 600) for agent in ("agent-001", "agent-002") for _ in range(3)]
    # Both servers must see them before they are lost, so both fire for every one of them.
    for url in p.stack.prometheus_urls:
        def scrapes_every_run(url: str = url) -> bool:
            return len(p.series(RUNTIME, url)) == len(orphans)
        eventually(scrapes_every_run, 30, f"{url} scrapes every run")
    held = orphans[0]
    silence = p.create_silence("hold one to look at it", execution_id=held.execution_id)
    p.restart_agent("agent-001")
    p.restart_agent("agent-002")

    # The held one, as each Alertmanager sees it: one alert (both servers sent it), no replica label.
    for url in p.stack.alertmanager_urls:
        alerts = eventually(partial(p.alerts, ORPHANED, url, execution_id=held.execution_id), 40,
                            f"{url} has the held execution's alert")
        assert len(alerts) == 1, alerts
        assert "replica" not in alerts[0]["labels"] and alerts[0]["status"]["state"] == "suppressed"
    for run in orphans[1:]:
        eventually(partial(p.failed, run.execution_id), 40, f"{run.execution_id} is failed")
    assert p.status(held.execution_id) == "running"
    for url in p.stack.prometheus_urls:
        eventually(partial(_notifications_sent, url), 20, f"{url} sent its alerts too")
    p.delete_silence(silence)
    eventually(lambda: p.failed(held.execution_id), 60, "the held execution is failed once the silence ends")

    holds(lambda: all(len(p.announcements(r.execution_id)) <= 1 for r in orphans), 5,
          "never more than one announcement per execution")
    for run in orphans:
        assert recovered_once(p, run), p.decisions(run.execution_id)
        assert len(p.announcements(run.execution_id)) == 1
        assert run.execution_id not in p.held(run.agent)
    p.stack.children.check()
