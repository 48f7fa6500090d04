"""The simulated scheduler: normal runs are reported, faults lose track the ways platforms do."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.inflight import (
    MARKER_TTL_SECONDS,
    InflightStore,
    RedisInflight,
    SqlInflight,
    Verdict,
    marker_key,
)
from exec_watchdog.platform_access.schema import schedule_executions
from exec_watchdog.platform_access.slots import SqlSlots, slot_metadata
from exec_watchdog.platform_access.timestamps import parse_utc
from exec_watchdog.simulated_platform.agent_server import AgentServer, serve_agents
from exec_watchdog.simulated_platform.scheduler import Scheduler
from exec_watchdog.simulated_platform.workload import Workload, agent_names, parse_mix, run_workload


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


async def test_a_leak_slot_run_is_reported_and_its_slot_stays_held(
        world: tuple[Scheduler, AgentServer, sa.Engine]) -> None:
    scheduler, _, engine = world
    run = await scheduler.start("a1", 0.1, "leak_slot")
    await _until(lambda: _status(engine, run.execution_id) == "success")
    await _until(lambda: scheduler.counts["slots_leaked"] == 1)
    assert scheduler.slots.held("a1") == {run.execution_id}


async def test_an_expire_slot_run_takes_a_slot_already_past_its_ttl_and_runs_normally(
        world: tuple[Scheduler, AgentServer, sa.Engine]) -> None:
    scheduler, server, engine = world
    run = await scheduler.start("a1", 1.0, "expire_slot")
    [entry] = scheduler.slots.entries()
    assert time.time() - entry.acquired_at > run.timeout_seconds + 300  # past the slot TTL from the start
    assert run.execution_id in {r.execution_id for r in server.registry("a1").running()}
    await _until(lambda: _status(engine, run.execution_id) == "success")
    assert scheduler.slots.held("a1") == set()


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
    # The rate is a ceiling: each start spawns a real process and writes its row, slot and activity,
    # so a busy 2-core machine starts fewer within the second, never more.
    assert 10 <= started <= 22
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
         "--run-seconds", "0.1,0.2", "--faults", "lose_report=0.2,retained_success=0.2,inflight=0.3",
         "--hold", "0.5", "--seed", "2", f"--database-url=sqlite:///{tmp_path / 'sim.db'}"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "simulated platform: 2 agents at" in result.stdout
    assert "report_lost" in result.stdout and "dispatched" in result.stdout
    summary = dict(item.split("=") for item in result.stdout.split("summary: ")[1].strip().split(", "))
    assert int(summary["started_inflight"]) > 0 and int(summary["started_retained_success"]) > 0
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'sim.db'}")
    with engine.connect() as c:
        names = set(c.execute(sa.select(schedule_executions.c.agent_name)).scalars())
        ids = list(c.execute(sa.select(schedule_executions.c.id)).scalars())
    engine.dispose()
    assert names == {"agent-001", "agent_002"}
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", i) for i in ids)


def test_simulate_command_refuses_bad_flags(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "exec_watchdog", "simulate", "--faults", "boom=1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "fault mix item" in result.stderr


async def test_slot_release_refused_by_redis_is_owed_and_retried(tmp_path: Path) -> None:
    from exec_watchdog.platform_access.slots import RedisSlots
    from exec_watchdog.testbed.servers import redis_server

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
            admin.execute_command("AUTH", "locked")  # type: ignore[no-untyped-call]
            admin.config_set("requirepass", "")
            assert scheduler.release_owed() == 0
            assert slots.held("a1") == set()
    finally:
        await server.stop()
        engine.dispose()


# -- Trinity's backend today: ids, names, in-flight markers, retained results -----------------------

AGENTS = ["a1", "gamma_ops", "beta.ops"]  # every separator sanitize_agent_name allows


@pytest.fixture(params=["redis", "sql"])
def markers(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[InflightStore, sa.Engine]:
    """A marker store of each kind, and the platform database beside it."""
    engine = db.create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    db.create_platform_tables(engine, slot_metadata)
    if request.param == "redis":
        return RedisInflight(request.getfixturevalue("redis_client")), engine
    return SqlInflight(engine), engine


@contextlib.asynccontextmanager
async def backend(markers: tuple[InflightStore, sa.Engine], **options: Any) -> AsyncIterator[
        tuple[Scheduler, AgentServer, InflightStore, sa.Engine]]:
    store, engine = markers
    server = await serve_agents(AGENTS, "s")
    scheduler: Scheduler | None = None
    try:
        options = {"marker_tick": 0.1, "marker_grace": 0.2, **options}
        scheduler = Scheduler(engine, SqlSlots(engine), server, timeout_seconds=60, inflight=store, **options)
        scheduler.prepare()
        yield scheduler, server, store, engine
    finally:
        if scheduler is not None:
            await scheduler.aclose()
        await server.stop()
        engine.dispose()


def _verdict(store: InflightStore, execution_id: str) -> Verdict:
    return store.verdicts([execution_id])[execution_id]


def _known(server: AgentServer, agent: str, execution_id: str) -> bool:
    registry = server.registry(agent)
    return execution_id in ({e.execution_id for e in registry.running()} | set(registry.pending_ids())
                            | set(registry.recently_completed_ids()))


def _row(engine: sa.Engine, execution_id: str) -> Any:
    with engine.connect() as c:
        return c.execute(sa.select(schedule_executions).where(schedule_executions.c.id == execution_id)).one()


async def test_ids_are_made_like_token_urlsafe_16_and_names_may_hold_underscores_and_dots(
        markers: tuple[InflightStore, sa.Engine]) -> None:
    async with backend(markers) as (scheduler, _, _, engine):
        runs = [await scheduler.start(agent, 0.1) for agent in AGENTS]
        for run in runs:
            assert re.fullmatch(r"[A-Za-z0-9_-]{22}", run.execution_id), run.execution_id
            await _until(lambda run=run: _status(engine, run.execution_id) == "success")  # type: ignore[misc]
    assert len({r.execution_id for r in runs}) == 3
    assert agent_names(4) == ["agent-001", "agent_002", "agent.003", "agent-004"]


def test_about_one_id_in_32_starts_with_a_dash_or_an_underscore() -> None:
    """The id maker is the standard library's; this pins the share the watchdog must cope with."""
    ids = [secrets.token_urlsafe(16) for _ in range(20_000)]
    share = sum(i[0] in "-_" for i in ids) / len(ids)
    assert 0.025 < share < 0.038


async def test_an_inflight_dispatch_is_held_with_a_live_parked_marker_the_agent_knows_nothing_of(
        markers: tuple[InflightStore, sa.Engine]) -> None:
    async with backend(markers, hold_seconds=1.5) as (scheduler, server, store, engine):
        run = await scheduler.start("gamma_ops", 0.3, "inflight")
        assert _row(engine, run.execution_id).status == "running"
        assert scheduler.slots.held("gamma_ops") == {run.execution_id}
        await _until(lambda: _verdict(store, run.execution_id) is Verdict.ALIVE)
        assert not _known(server, "gamma_ops", run.execution_id), "only the marker says it is alive"
        if isinstance(store, RedisInflight):
            marker = store.marker(run.execution_id)
            assert marker is not None
            assert (marker.agent, marker.phase, marker.pid) == ("gamma_ops", "parked", os.getpid())
            assert abs(marker.since - time.time()) < 10
        await _until(lambda: _known(server, "gamma_ops", run.execution_id))
        await _until(lambda: _status(engine, run.execution_id) == "success")
        await _until(lambda: _verdict(store, run.execution_id) is Verdict.ABSENT)
    assert scheduler.counts["started_inflight"] == 1 and scheduler.counts["reported"] == 1


async def test_a_dispatch_held_five_seconds_or_more_is_re_anchored_at_grant(
        markers: tuple[InflightStore, sa.Engine]) -> None:
    async with backend(markers, hold_seconds=5.0) as (scheduler, server, _, engine):
        run = await scheduler.start("beta.ops", 30, "inflight")
        await _until(lambda: _known(server, "beta.ops", run.execution_id), timeout=20)
        row = _row(engine, run.execution_id)
    started, queued = parse_utc(row.started_at), parse_utc(row.queued_at)
    assert (started - queued).total_seconds() >= 4.9, "started_at is the grant, queued_at the admission"
    assert scheduler.started[run.execution_id].started_at == started


async def test_a_fast_dispatch_never_writes_a_marker_and_a_long_one_is_marked_calling(
        markers: tuple[InflightStore, sa.Engine]) -> None:
    async with backend(markers, marker_grace=0.6) as (scheduler, _, store, engine):
        fast = await scheduler.start("a1", 0.1)
        slow = await scheduler.start("a1", 1.5)
        seen: set[Verdict] = set()
        while _status(engine, fast.execution_id) == "running":
            seen.add(_verdict(store, fast.execution_id))
            await asyncio.sleep(0.02)
        await _until(lambda: _verdict(store, slow.execution_id) is Verdict.ALIVE)
        if isinstance(store, RedisInflight):
            marker = store.marker(slow.execution_id)
            assert marker is not None and marker.phase == "calling"
        await _until(lambda: _status(engine, slow.execution_id) == "success")
        await _until(lambda: _verdict(store, slow.execution_id) is Verdict.ABSENT)
    assert seen == {Verdict.ABSENT}


async def test_retained_success_loses_the_report_the_agent_keeps_the_success_and_the_marker_lapses(
        markers: tuple[InflightStore, sa.Engine]) -> None:
    async with backend(markers, marker_grace=0.1) as (scheduler, server, store, engine):
        run = await scheduler.start("gamma_ops", 0.6, "retained_success")
        await _until(lambda: _verdict(store, run.execution_id) is Verdict.ALIVE)
        registry = server.registry("gamma_ops")
        await _until(lambda: registry.retained(run.execution_id) is not None)
        record = registry.retained(run.execution_id)
        await asyncio.sleep(0.5)  # several ticks: a dead worker deletes nothing
        assert _verdict(store, run.execution_id) is Verdict.ALIVE
        if isinstance(store, RedisInflight):
            assert 0 < markers_ttl(store, run.execution_id) <= MARKER_TTL_SECONDS
        assert _status(engine, run.execution_id) == "running"
        assert run.execution_id in registry.recently_completed_ids()
    assert record is not None and record.envelope["status"] == "success"
    assert scheduler.counts["reports_lost"] == 1


async def test_a_lost_asynchronous_report_leaves_no_record_and_no_marker(
        markers: tuple[InflightStore, sa.Engine]) -> None:
    async with backend(markers, marker_grace=0.1) as (scheduler, server, store, engine):
        run = await scheduler.start("beta.ops", 0.6, "lose_report")
        sync = await scheduler.start("beta.ops", 0.6, "retained_success")  # ends after it: a witness
        registry = server.registry("beta.ops")
        await _until(lambda: registry.retained(sync.execution_id) is not None)
        assert registry.retained(run.execution_id) is None
        assert run.execution_id in registry.recently_completed_ids()
        assert _verdict(store, run.execution_id) is Verdict.ABSENT
        assert _status(engine, run.execution_id) == "running"


async def test_an_agent_restart_ends_the_dispatches_on_it_but_not_those_held_in_the_backend(
        markers: tuple[InflightStore, sa.Engine]) -> None:
    async with backend(markers, marker_grace=0.1, hold_seconds=1.5) as (scheduler, _, store, engine):
        lost = await scheduler.start("a1", 30)
        held = await scheduler.start("a1", 0.2, "inflight")
        await _until(lambda: _verdict(store, lost.execution_id) is Verdict.ALIVE
                     and _verdict(store, held.execution_id) is Verdict.ALIVE)
        scheduler.restart_agent("a1")
        await _until(lambda: _verdict(store, lost.execution_id) is Verdict.ABSENT)
        assert _verdict(store, held.execution_id) is Verdict.ALIVE
        await _until(lambda: _status(engine, held.execution_id) == "success")
    assert _status(engine, lost.execution_id) == "running"


async def test_markers_fail_open_when_their_store_is_down(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    db.create_platform_tables(engine, slot_metadata)
    dead = RedisInflight.from_url(f"redis://127.0.0.1:{_free_port()}", timeout=0.2)
    async with backend((dead, engine), marker_grace=0.0) as (scheduler, _, _, _):
        run = await scheduler.start("a1", 0.5)
        await _until(lambda: _status(engine, run.execution_id) == "success")
    assert scheduler.dispatches is not None and scheduler.dispatches.failed_ticks > 0


def markers_ttl(store: RedisInflight, execution_id: str) -> int:
    return int(store._redis.ttl(marker_key(execution_id)))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_bad_hold_or_marker_timing_is_refused(markers: tuple[InflightStore, sa.Engine]) -> None:
    for options, message in (({"hold_seconds": -1}, "hold_seconds"), ({"marker_tick": 0}, "marker tick"),
                             ({"marker_grace": -0.5}, "marker tick")):
        with pytest.raises(ValueError, match=message):
            async with backend(markers, **options):
                pass


def _activities(engine: sa.Engine) -> list[Any]:
    from exec_watchdog.platform_access.schema import agent_activities

    with engine.connect() as c:
        return list(c.execute(sa.select(agent_activities)))


async def test_every_run_opens_its_activity_and_its_report_closes_it_as_trinity_does(
        world: tuple[Scheduler, AgentServer, sa.Engine]) -> None:
    scheduler, _, engine = world
    reported = await scheduler.start("a1", 0.1)
    lost = await scheduler.start("a1", 0.1, "lose_report")
    await _until(lambda: _status(engine, reported.execution_id) == "success")
    await _until(lambda: scheduler.counts["reports_lost"] == 1)
    by_run = {a.related_execution_id: a for a in _activities(engine)}
    done, open_ = by_run[reported.execution_id], by_run[lost.execution_id]
    assert (done.activity_type, done.activity_state, done.error) == ("schedule_start", "completed", None)
    assert done.duration_ms is not None and done.completed_at.endswith("Z")
    assert (open_.activity_state, open_.completed_at) == ("started", None)  # left for the watchdog to close


async def test_the_cleanup_faults_write_the_rows_trinitys_cleanup_ends(
        world: tuple[Scheduler, AgentServer, sa.Engine]) -> None:
    from exec_watchdog.platform_access import cleanup_rows
    from exec_watchdog.platform_access.timestamps import utcnow

    scheduler, _, engine = world
    skipped = scheduler.add_skipped("a1")
    queued = scheduler.add_stale_queued("a2", 90)
    activity = scheduler.add_stale_activity("a1", 300)
    scheduler.subscribe("a2", "a1")
    with engine.connect() as c:
        rows = {r.execution_id: r for r in cleanup_rows.pending_cleanup(c, utcnow(), 60)}
    assert (rows[skipped].status, rows[skipped].completed) == ("skipped", False)
    assert rows[queued].status == "queued" and 89 <= rows[queued].age_seconds <= 120
    [stale] = [a for a in _activities(engine) if a.id == activity]
    assert (stale.activity_state, stale.related_execution_id) == ("started", None)


def _session(engine: sa.Engine, execution_id: str) -> str | None:
    with engine.connect() as c:
        value = c.execute(sa.select(schedule_executions.c.claude_session_id)
                          .where(schedule_executions.c.id == execution_id)).scalar_one()
    return None if value is None else str(value)


async def test_runs_carry_the_dispatch_marker_trinitys_backend_writes_and_a_silent_launch_failure_none(
        world: tuple[Scheduler, AgentServer, sa.Engine]) -> None:
    scheduler, server, engine = world
    sync = await scheduler.start("a1", 30)
    asynchronous = await scheduler.start("a1", 30, "lose_report")
    silent = await scheduler.start("a1", 30, "no_session")
    assert (_session(engine, sync.execution_id), _session(engine, asynchronous.execution_id),
            _session(engine, silent.execution_id)) == ("dispatched", "dispatched_async", None)
    running = {e.execution_id for e in server.registry("a1").running()}
    assert silent.execution_id not in running and sync.execution_id in running, "a silent launch never starts"
    assert _status(engine, silent.execution_id) == "running" and silent.execution_id in scheduler.slots.held("a1")


async def test_a_removed_agent_loses_its_runs_for_good_and_a_partition_cuts_off_every_other_agent(
        world: tuple[Scheduler, AgentServer, sa.Engine]) -> None:
    scheduler, server, engine = world
    run = await scheduler.start("a1", 30)
    scheduler.remove_agent("a1")
    assert server.registry("a1").running() == [] and server.agents["a1"].fault == "gone"
    assert _status(engine, run.execution_id) == "running", "nothing reports it: it is the watchdog's to end"
    scheduler.partition()
    assert {name: a.fault for name, a in server.agents.items()} == {"a1": "gone", "a2": "down"}
    scheduler.heal()
    assert {name: a.fault for name, a in server.agents.items()} == {"a1": "gone", "a2": "none"}, "gone stays gone"


async def test_schedules_send_no_more_runs_to_an_agent_removed_for_good(
        world: tuple[Scheduler, AgentServer, sa.Engine]) -> None:
    """A removed agent's schedules stop firing, so no run the watchdog must fail is started on it; the
    other agents' schedules go on."""
    from exec_watchdog.simulated_platform.schedules import SimSchedule, run_schedules

    scheduler, _, engine = world
    schedule = SimSchedule("nightly", timeout_seconds=60, every_seconds=1.0, draw=lambda rng: 0.1)
    scheduler.remove_agent("a1")
    await run_schedules(scheduler, [(schedule, "a1"), (schedule, "a2")], 0.5, every_seconds=0.1, seed=1)
    with engine.connect() as c:
        agents = {row.agent_name for row in c.execute(sa.select(schedule_executions.c.agent_name))}
    assert agents == {"a2"}
