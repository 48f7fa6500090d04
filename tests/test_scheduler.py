"""The simulated scheduler: normal runs are reported, faults lose track the ways platforms do."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from platform_access import database as db
from platform_access.schema import schedule_executions
from platform_access.slots import SqlSlots, slot_metadata
from simulated_platform.agent_server import AgentServer, serve_agents
from simulated_platform.scheduler import Scheduler
from simulated_platform.workload import Workload, parse_mix, run_workload


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Scheduler, AgentServer, sa.Engine]]:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    db.create_platform_tables(engine, slot_metadata)
    server = await serve_agents(["a1", "a2"], "s")
    scheduler = Scheduler(engine, SqlSlots(engine), server, timeout_seconds=5, late_report_seconds=1.0)
    scheduler.prepare()
    yield scheduler, server, engine
    await server.stop()
    engine.dispose()


def _status(engine: sa.Engine, execution_id: str) -> str:
    with engine.connect() as c:
        return str(c.execute(sa.select(schedule_executions.c.status)
                             .where(schedule_executions.c.id == execution_id)).scalar_one())


async def _until(check: Callable[[], bool], timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_normal_run_is_reported_and_its_slot_released(world: tuple[Scheduler, AgentServer, sa.Engine]) -> None:
    scheduler, _, engine = world
    run = await scheduler.start("a1", 1.5)  # long enough to observe it running on a loaded machine
    assert _status(engine, run.execution_id) == "running"
    assert scheduler.slots.held("a1") == {run.execution_id}
    await _until(lambda: _status(engine, run.execution_id) == "success")
    assert scheduler.slots.held("a1") == set()
    with engine.connect() as c:
        timeout = {e.id: e.timeout_seconds for e in db.running_executions(c)[0]}
    assert timeout == {}


async def test_lost_report_leaves_an_orphan(world: tuple[Scheduler, AgentServer, sa.Engine]) -> None:
    scheduler, server, engine = world
    run = await scheduler.start("a1", 0.1, "lose_report")
    await _until(lambda: run.execution_id in server.registry("a1").recently_completed_ids())
    await asyncio.sleep(0.2)
    assert _status(engine, run.execution_id) == "running"
    assert scheduler.slots.held("a1") == {run.execution_id}
    assert scheduler.counts["reports_lost"] == 1


async def test_hung_run_keeps_running_with_the_schedule_timeout(
        world: tuple[Scheduler, AgentServer, sa.Engine]) -> None:
    scheduler, server, engine = world
    run = await scheduler.start("a2", 1, "hang")
    with engine.connect() as c:
        [execution] = db.running_executions(c)[0]
    assert execution.timeout_seconds == 5
    assert {e.execution_id for e in server.registry("a2").running()} == {run.execution_id}


async def test_late_report_stays_known_to_the_agent_until_reported(
        world: tuple[Scheduler, AgentServer, sa.Engine]) -> None:
    scheduler, server, engine = world
    run = await scheduler.start("a1", 0.1, "late_report")
    await _until(lambda: run.execution_id in server.registry("a1").recently_completed_ids())
    assert _status(engine, run.execution_id) == "running"
    await _until(lambda: _status(engine, run.execution_id) == "success")


async def test_agent_restart_forgets_everything(world: tuple[Scheduler, AgentServer, sa.Engine]) -> None:
    scheduler, server, engine = world
    runs = [await scheduler.start("a1", 30) for _ in range(3)]
    scheduler.restart_agent("a1")
    assert server.registry("a1").running() == []
    await asyncio.sleep(0.2)
    assert {_status(engine, r.execution_id) for r in runs} == {"running"}


async def test_workload_mixes_faults_at_the_requested_rate(world: tuple[Scheduler, AgentServer, sa.Engine]) -> None:
    scheduler, _, _ = world
    await run_workload(scheduler, Workload(rate_per_second=20, duration_seconds=1, run_seconds=(0.1, 0.2),
                                           mix={"lose_report": 0.5}, seed=1))
    started = sum(v for k, v in scheduler.counts.items() if k.startswith("started_"))
    assert 15 <= started <= 22
    assert scheduler.counts["started_lose_report"] > 0 and scheduler.counts["started_none"] > 0


def test_fault_mix_and_workload_reject_bad_input() -> None:
    assert parse_mix("lose_report=0.2, hang=0.1") == {"lose_report": 0.2, "hang": 0.1}
    for bad in ("explode=0.1", "hang", "hang=lots"):
        with pytest.raises(ValueError):
            parse_mix(bad)
    with pytest.raises(ValueError, match="add up to at most 1"):
        Workload(mix={"hang": 0.7, "lose_report": 0.7})


def test_db_init_creates_once_then_refuses(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    cmd = [sys.executable, "-m", "exec_watchdog", "db", "init", f"--database-url={url}"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert second.returncode == 2 and "never alters an existing database" in second.stderr


def test_simulate_command_runs_with_faults_and_summarises(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exec_watchdog", "simulate", "--agents", "2", "--rate", "10", "--duration", "1",
         "--run-seconds", "0.1,0.2", "--faults", "lose_report=0.3", "--seed", "3",
         f"--database-url=sqlite:///{tmp_path / 'sim.db'}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "simulated platform: 2 agents" in result.stdout
    assert "report_lost" in result.stdout and "summary:" in result.stdout


def test_simulate_command_refuses_bad_flags(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "exec_watchdog", "simulate", "--faults", "boom=1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "fault mix item" in result.stderr


async def test_slot_release_refused_by_redis_is_owed_and_retried(tmp_path: Path) -> None:
    from platform_access.slots import RedisSlots
    from tests.servers import redis_server

    engine = db.create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    db.create_platform_tables(engine, slot_metadata)
    server = await serve_agents(["a1"], "s")
    try:
        with redis_server() as url:
            slots = RedisSlots.from_url(url)
            scheduler = Scheduler(engine, slots, server)
            scheduler.prepare()
            run = await scheduler.start("a1", 0.3)
            admin = redis.Redis.from_url(url)
            admin.config_set("requirepass", "locked")  # Redis refuses everyone who (re)connects ...
            admin.client_kill_filter(_type="normal", skipme=True)  # ... and the scheduler must reconnect
            await _until(lambda: _status(engine, run.execution_id) == "success")
            assert scheduler.owed_releases == {("a1", run.execution_id)}
            admin.execute_command("AUTH", "locked")
            admin.config_set("requirepass", "")
            assert scheduler.release_owed() == 0
            assert slots.held("a1") == set()
    finally:
        await server.stop()
        engine.dispose()
