"""Benchmark: one full exporter scrape at 10,000 running executions across 1,000 simulated agents.

    .venv/bin/python bench/bench_exporter.py [--agents 1000] [--executions 10000] [--scrapes 5]
                                             [--database sqlite|postgresql] [--redis] [--poll-concurrency 50]

Three processes, so that each number belongs to the right one:

* this script: builds the platform database, then scrapes and measures;
* the simulated agents (a child running :func:`serve_agents`, every execution a real ``sleep``
  process; 5 % of the database's running rows are unknown to their agent, as orphans would be);
* the exporter: the real ``exec-watchdog exporter`` command, whose peak RSS (VmHWM) is read from
  /proc.

Goals (issue 3): a full scrape (database read + all agent polls + exposition) within 1 s wall, the
exporter's peak RSS within 150 MB, and the exposition within 2x of what bare client_python needs
to render the same series.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECRET = "bench-secret"


# -- the simulated agents, in their own process -------------------------------------------------

def serve_agents_child(plan_path: str) -> int:
    """Child mode: serve the planned agents, start their processes, print READY, wait for stdin EOF."""
    from exec_watchdog.simulated_platform.agent_server import serve_agents

    plan: dict[str, list[str]] = json.loads(Path(plan_path).read_text())

    async def main() -> None:
        server = await serve_agents(plan, SECRET)
        try:
            for agent, ids in plan.items():
                registry = server.registry(agent)
                for execution_id in ids:
                    await registry.start(execution_id, 3600)
            print(f"READY {server.url_template}", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        finally:
            await server.stop()

    asyncio.run(main())
    return 0


@contextmanager
def simulated_agents(plan: dict[str, list[str]], workdir: Path) -> Iterator[tuple[str, int]]:
    with agents_child(__file__, "--serve-agents", plan, workdir, "the simulated agents") as started:
        yield started


@contextmanager
def agents_child(script: str, mode: str, plan: dict[str, list[str]], workdir: Path,
                 what: str) -> Iterator[tuple[str, int]]:
    """Run ``script`` in its child ``mode`` serving ``plan``; yield the URL template it prints after
    READY and its pid. Closing its stdin stops it."""
    plan_path = workdir / "plan.json"
    plan_path.write_text(json.dumps(plan))
    proc = subprocess.Popen([sys.executable, script, mode, str(plan_path)], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"{what} did not start: {line!r}")
        yield line.split()[1], proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


# -- the platform database ------------------------------------------------------------------------

def build_database(url: str, agents: int, executions: int, lost: float,
                   redis_url: str | None, slots_held: int = 3000) -> dict[str, list[str]]:
    """Fill the platform tables; return what each agent really runs."""
    import sqlalchemy as sa

    from exec_watchdog.platform_access.database import create_engine, create_platform_tables
    from exec_watchdog.platform_access.schema import agent_ownership, agent_schedules, schedule_executions
    from exec_watchdog.platform_access.slots import RedisSlots, agent_slots, slot_metadata
    from exec_watchdog.platform_access.timestamps import format_utc, utcnow

    rng = random.Random(3)
    engine = create_engine(url)
    create_platform_tables(engine, slot_metadata)
    names = [f"agent-{i:04d}" for i in range(agents)]
    now = utcnow()
    rows, slots = [], []
    plan: dict[str, list[str]] = {name: [] for name in names}
    for n in range(executions):
        agent = names[n % agents]
        execution_id = f"exec-{n:06d}"
        age = rng.uniform(0, 7200)
        rows.append({"id": execution_id, "schedule_id": f"sched-{n % 100:03d}" if n % 3 else "__manual__",
                     "agent_name": agent, "status": "running", "message": "benchmark", "triggered_by": "schedule",
                     "started_at": format_utc(now - timedelta(seconds=age)),
                     # Trinity's backend writes this on dispatch; 1 % never got a session (silent launch failures)
                     "claude_session_id": None if n % 100 == 0 else "dispatched"})
        if n < slots_held:  # the bound: 3,000 slots, ages up to 2 h, so some are past their TTL
            slots.append({"agent_name": agent, "execution_id": execution_id, "started_at": time.time() - age,
                          "message_preview": "benchmark", "slot_number": 1, "timeout_seconds": 3600})
        if rng.random() >= lost:
            plan[agent].append(execution_id)
    with engine.begin() as c:
        c.execute(sa.insert(agent_ownership), [
            {"agent_name": a, "execution_timeout_seconds": None if i % 4 == 0 else 1800 + i,
             "max_parallel_tasks": 10 + i % 5} for i, a in enumerate(names)])
        c.execute(sa.insert(agent_schedules), [
            {"id": f"sched-{s:03d}", "agent_name": names[s % agents], "name": f"s{s}",
             "timeout_seconds": None if s % 2 else 600 + s} for s in range(100)])
        c.execute(sa.insert(schedule_executions), rows)
        if redis_url is None:
            c.execute(sa.insert(agent_slots), slots)
    if redis_url is not None:
        store = RedisSlots.from_url(redis_url)
        for slot in slots:
            store.acquire(str(slot["agent_name"]), str(slot["execution_id"]),
                          datetime.fromtimestamp(float(str(slot["started_at"])), UTC), "benchmark", 3600)
    engine.dispose()
    return plan


def add_cleanup_load(url: str, agents: int, activities: int, terminal: int) -> dict[str, int]:
    """Issue 22's load: ``activities`` activities (2 % still started past the publish bound, the rest
    closed or recent), ``terminal`` finished rows, and a few skipped and long-queued rows. Returns
    how many series the cleanup families must publish."""
    import sqlalchemy as sa

    from exec_watchdog.platform_access.database import create_engine
    from exec_watchdog.platform_access.schema import agent_activities, schedule_executions
    from exec_watchdog.platform_access.timestamps import format_utc, utcnow

    rng = random.Random(5)
    engine = create_engine(url)
    now = utcnow()
    names = [f"agent-{i:04d}" for i in range(agents)]
    acts, published = [], 0
    for n in range(activities):
        old = n % 50 == 0  # 2 %: started 61-119 min ago, published (not stale yet)
        state = "started" if old or n % 10 == 1 else "completed"
        age = rng.uniform(3660, 7140) if old else rng.uniform(0, 3000)
        published += old
        stamp = format_utc(now - timedelta(seconds=age))
        acts.append({"id": f"act-{n:06d}", "agent_name": names[n % agents], "activity_type": "schedule_start",
                     "activity_state": state, "started_at": stamp, "created_at": stamp, "triggered_by": "schedule",
                     "related_execution_id": f"done-{n:06d}"})
    rows = []
    for n in range(terminal):
        stamp = format_utc(now - timedelta(seconds=rng.uniform(60, 30 * 86400)))
        rows.append({"id": f"done-{n:06d}", "schedule_id": "__manual__", "agent_name": names[n % agents],
                     "status": ("success", "failed", "cancelled", "skipped")[n % 4], "message": "benchmark",
                     "triggered_by": "schedule", "started_at": stamp, "completed_at": stamp, "duration_ms": 1000})
    extra = 50
    for n in range(extra):  # unfinalized skipped rows and queued rows: half queued long enough to be published
        stamp = format_utc(now - timedelta(seconds=(50_000 if n % 2 else 100)))
        rows.append({"id": f"cleanup-{n:03d}", "schedule_id": "__manual__", "agent_name": names[n % agents],
                     "status": "skipped" if n < 10 else "queued", "message": "benchmark", "triggered_by": "schedule",
                     "started_at": stamp, "queued_at": stamp})
    with engine.begin() as c:
        for start in range(0, len(rows), 5000):
            c.execute(sa.insert(schedule_executions), rows[start:start + 5000])
        for start in range(0, len(acts), 5000):
            c.execute(sa.insert(agent_activities), acts[start:start + 5000])
    engine.dispose()
    return {"activities": published, "cleanup_rows": 10 + sum(1 for n in range(10, extra) if n % 2)}


# -- the exporter, in its own process ----------------------------------------------------------------

def exporter_command() -> list[str]:
    return [sys.executable, "-m", "exec_watchdog", "--log-level", "warning", "exporter"]


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0])
    return fields


@contextmanager
def exporter(database_url: str, url_template: str, redis_url: str | None, concurrency: int,
             workdir: Path, extra: Sequence[str] = ("--agent-timeout", "5", "--scrape-timeout", "20"),
             name: str = "exporter") -> Iterator[tuple[str, int]]:
    from exec_watchdog.testbed.servers import free_port, wait_for_port

    port = free_port()
    argv = [*exporter_command(), "--listen", f"127.0.0.1:{port}", "--database-url", database_url,
            "--agent-url-template", url_template, "--poll-concurrency", str(concurrency), *extra]
    if redis_url:
        argv += ["--redis-url", redis_url]
    log = (workdir / f"{name}.log").open("w")
    proc = subprocess.Popen(argv, cwd=ROOT, stderr=log, env={**os.environ, "EXEC_WATCHDOG_AGENT_SECRET": SECRET})
    try:
        wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


# -- agent polls: the lean transport against httpx's default ----------------------------------------

def compare_transports(url_template: str, agents: list[str], concurrency: int) -> None:
    """CPU seconds this process spends polling every agent once, with each transport."""
    import psutil

    from exec_watchdog.platform_access.agent_client import AgentClient
    from exec_watchdog.platform_access.poll_transport import PollTransport

    me = psutil.Process()

    async def poll_all(client: AgentClient) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(agent: str) -> None:
            async with gate:
                if not (await client.running(agent)).answered:
                    raise RuntimeError(f"{agent} did not answer")

        await asyncio.gather(*(one(a) for a in agents))

    async def measure(transport: PollTransport | None) -> tuple[float, float]:
        client = AgentClient(url_template, SECRET, timeout=10, max_connections=concurrency, transport=transport)
        try:
            await poll_all(client)  # warm: connections open
            walls, cpus = [], []
            for _ in range(3):
                cpu, start = _cpu(me), time.perf_counter()
                await poll_all(client)
                walls.append(time.perf_counter() - start)
                cpus.append(_cpu(me) - cpu)
            return statistics.median(walls), statistics.median(cpus)
        finally:
            await client.aclose()

    for label, transport in (("httpx default transport", None),
                             ("exporter PollTransport", PollTransport(max_connections=concurrency))):
        wall, cpu = asyncio.run(measure(transport))
        print(f"  {len(agents)} polls, concurrency {concurrency}, {label}: wall {wall:.3f} s, client CPU {cpu:.3f} s")


# -- exposition: ours against bare client_python ----------------------------------------------------

def exposition_ratio(agents: int, executions: int, repeats: int = 5) -> tuple[float, float]:
    """Seconds to render the same series: ours (exposition.py + process metrics) and bare client_python."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics, generate_latest

    from exec_watchdog.common.contract import ExporterMetric as m
    from exec_watchdog.exporter.app import render
    from exec_watchdog.exporter.snapshot import POLL_ERROR_REASONS, AgentFacts, ExecutionFacts, RegistryCounts, Snapshot

    names = [f"agent-{i:04d}" for i in range(agents)]
    facts = tuple(ExecutionFacts(names[n % agents], f"exec-{n:06d}", f"sched-{n % 100:03d}", n * 0.37, 3600,
                                 n % 20 != 0) for n in range(executions))
    agent_facts = tuple(AgentFacts(a, True, RegistryCounts(10, 0, 1), 10, 13) for a in names)
    errors = {(a, r): 0 for a in names for r in POLL_ERROR_REASONS}
    snapshot = Snapshot(True, 0.5, "0.1.0", facts, agent_facts, 0, errors)

    disable_created_metrics()  # type: ignore[no-untyped-call]  # our counter has no _created series; bare must render the same series
    bare = CollectorRegistry()
    ex = ("agent", "execution_id", "schedule_id")
    runtime = Gauge(m.EXECUTION_RUNTIME, "h", ex, registry=bare)
    timeout = Gauge(m.EXECUTION_TIMEOUT, "h", ex, registry=bare)
    known = Gauge(m.EXECUTION_AGENT_KNOWN, "h", ex, registry=bare)
    for e in facts:
        runtime.labels(e.agent, e.execution_id, e.schedule_id).set(e.runtime_seconds)
        timeout.labels(e.agent, e.execution_id, e.schedule_id).set(e.timeout_seconds)
        known.labels(e.agent, e.execution_id, e.schedule_id).set(1.0 if e.agent_known else 0.0)
    up = Gauge(m.AGENT_UP, "h", ["agent"], registry=bare)
    reg = Gauge(m.AGENT_REGISTRY_EXECUTIONS, "h", ["agent", "state"], registry=bare)
    used = Gauge(m.AGENT_SLOTS_USED, "h", ["agent"], registry=bare)
    limit = Gauge(m.AGENT_SLOTS_LIMIT, "h", ["agent"], registry=bare)
    for a in agent_facts:
        up.labels(a.name).set(1)
        for state in ("running", "pending", "recently_completed"):
            reg.labels(a.name, state).set(1)
        used.labels(a.name).set(10)
        limit.labels(a.name).set(13)
    polls = Counter(m.AGENT_POLL_ERRORS, "h", ["agent", "reason"], registry=bare)
    for agent, reason in errors:
        polls.labels(agent, reason)
    for name in (m.SCRAPE_DURATION, m.DATABASE_UP, m.INVALID_ROWS):
        Gauge(name, "h", registry=bare).set(1)
    Gauge(m.BUILD_INFO, "h", ["version"], registry=bare).labels("0.1.0").set(1)

    def best(fn: Callable[[], object]) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    return best(lambda: render(snapshot)), best(lambda: generate_latest(bare))


# -- main -------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-agents", metavar="PLAN", help=argparse.SUPPRESS)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--slots", type=int, default=3000, help="capacity slots held (the first N running rows)")
    parser.add_argument("--lost", type=float, default=0.05, help="fraction of running rows their agent lost")
    parser.add_argument("--scrapes", type=int, default=5)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--redis", action="store_true", help="capacity slots in Redis instead of the SQL table")
    parser.add_argument("--poll-concurrency", type=int, default=50)
    parser.add_argument("--activities", type=int, default=20_000, help="agent_activities rows (issue 22)")
    parser.add_argument("--terminal", type=int, default=100_000, help="finished schedule_executions rows (issue 22)")
    parser.add_argument("--compare-transports", action="store_true",
                        help="also time one round of polls in this process with httpx's default transport and ours")
    args = parser.parse_args()
    if args.serve_agents:
        return serve_agents_child(args.serve_agents)

    import httpx
    import psutil

    from exec_watchdog.testbed.servers import redis_server, throwaway_database

    with tempfile.TemporaryDirectory(prefix="ew-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        database_url = stack.enter_context(throwaway_database(args.database, workdir))
        redis_url = stack.enter_context(redis_server()) if args.redis else None

        started = time.perf_counter()
        plan = build_database(database_url, args.agents, args.executions, args.lost, redis_url, args.slots)
        cleanup = add_cleanup_load(database_url, args.agents, args.activities, args.terminal)
        print(f"database: {args.executions} running rows, {args.agents} agents ({args.database}, slots in "
              f"{'Redis' if redis_url else 'SQL'}), {args.activities} activities, {args.terminal} finished rows "
              f"(published: {cleanup['activities']} activities, {cleanup['cleanup_rows']} skipped/queued rows) in "
              f"{time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        url_template, agents_pid = stack.enter_context(simulated_agents(plan, workdir))
        print(f"simulated agents: {sum(map(len, plan.values()))} real processes on {args.agents} agents, "
              f"pid {agents_pid}, in {time.perf_counter() - started:.1f} s")

        base, pid = stack.enter_context(exporter(database_url, url_template, redis_url, args.poll_concurrency,
                                                 workdir))
        print(f"exporter: pid {pid}, RSS after start {memory_kib(pid)['VmRSS'] / 1024:.1f} MB")
        walls, gathers, cpus, agent_cpus = [], [], [], []
        exporter_proc, agents_proc = psutil.Process(pid), psutil.Process(agents_pid)
        with httpx.Client(base_url=base, timeout=60) as http:
            for n in range(args.scrapes):
                before, agents_before = _cpu(exporter_proc), _cpu(agents_proc)
                start = time.perf_counter()
                body = http.get("/metrics").text
                walls.append(time.perf_counter() - start)
                cpus.append(_cpu(exporter_proc) - before)
                agent_cpus.append(_cpu(agents_proc) - agents_before)
                gathers.append(_value(body, "exec_watchdog_exporter_scrape_duration_seconds"))
                if n == 0:
                    check(body, args.executions, args.agents)
        mem = memory_kib(pid)
        load = os.getloadavg()[0]
        if args.compare_transports:
            print("agent polls alone, in this process:")
            compare_transports(url_template, list(plan), args.poll_concurrency)

    ours, bare = exposition_ratio(args.agents, args.executions)
    print()
    print(f"full scrape wall (GET /metrics): first {walls[0]:.3f} s, median {statistics.median(walls):.3f} s, "
          f"max {max(walls):.3f} s   (goal <= 1 s)")
    print(f"  of which gathering (db + polls + slots): first {gathers[0]:.3f} s, "
          f"median {statistics.median(gathers):.3f} s")
    print(f"  exporter CPU per scrape: median {statistics.median(cpus):.3f} s; simulated agents' CPU: "
          f"median {statistics.median(agent_cpus):.3f} s; 1-min load average at the end: {load:.1f} on "
          f"{os.cpu_count()} cores")
    print(f"exporter peak RSS (VmHWM): {mem['VmHWM'] / 1024:.1f} MB, now {mem['VmRSS'] / 1024:.1f} MB   "
          "(goal <= 150 MB)")
    print(f"exposition of the same series: ours {ours * 1000:.1f} ms, bare client_python {bare * 1000:.1f} ms, "
          f"ratio {ours / bare:.2f}x   (goal <= 2x)")
    return 0


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _value(body: str, name: str) -> float:
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"{name} missing from the scrape")


def check(body: str, executions: int, agents: int) -> None:
    """The scrape must be complete, or its timing means nothing."""
    runtime = sum(1 for line in body.splitlines() if line.startswith("exec_watchdog_execution_runtime_seconds{"))
    known = [line for line in body.splitlines() if line.startswith("exec_watchdog_execution_agent_known{")]
    up = sum(1 for line in body.splitlines() if line.startswith("exec_watchdog_agent_up{") and line.endswith(" 1.0"))
    lost = sum(1 for line in known if line.endswith(" 0.0"))
    print(f"scrape content: {runtime} executions, {len(known)} with presence ({lost} unknown to their agent), "
          f"{up}/{agents} agents up, {len(body) / 1e6:.1f} MB of text")
    sizes: dict[str, int] = {}
    for line in body.splitlines():
        if not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            sizes[name] = sizes.get(name, 0) + len(line) + 1
    largest = sorted(sizes.items(), key=lambda item: -item[1])[:6]
    print("  largest families: " + ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in largest))
    if runtime != executions or up != agents or len(known) != executions:
        raise SystemExit("incomplete scrape: the figures below would not be for the full load")
    activities = sum(1 for line in body.splitlines() if line.startswith("exec_watchdog_activity_started_seconds{"))
    cleanup = sum(1 for line in body.splitlines() if line.startswith(("exec_watchdog_execution_skipped_unfinalized",
                                                                      "exec_watchdog_execution_queued_seconds{")))
    print(f"  cleanup series: {activities} long-open activities, {cleanup} skipped/long-queued rows (never one "
          "per finished row)")


if __name__ == "__main__":
    sys.exit(main())
