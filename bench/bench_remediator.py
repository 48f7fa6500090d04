"""Remediator throughput: one notification carrying 1,000 orphan alerts.

    .venv/bin/python bench/bench_remediator.py [--executions 1000] [--agents 100] [--database-url URL]
                                               [--redis-url URL]

1,000 running executions on 100 simulated agents that know none of them; one webhook delivery with
all 1,000 alerts, fully processed (verified against the database and every agent, failed,
slots released, announced, audited). Compared with the floor: the same database doing 1,000 bare
guarded ``UPDATE ... WHERE status = 'running'`` in one transaction. Goals: <= 2 s and <= 3x floor.

The same notification is also run with evidence switched off (no facts collected, none stored), to
show what keeping the evidence of every decision costs. Goal: with evidence <= 1.25x without. Each
repeat runs both back to back (alternating which goes first) and the ratio is the median of the
per-repeat ratios, so load from other processes drifting over the run cancels out; the CPU time of
the remediator's process (the agents run in another) is printed too, being less sensitive to it.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.synchronize
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.schema import schedule_executions
from exec_watchdog.platform_access.slots import open_slot_store, slot_metadata
from exec_watchdog.platform_access.timestamps import utcnow
from exec_watchdog.remediator.app import Config, create_app
from exec_watchdog.remediator.audit import decisions
from exec_watchdog.remediator.auth import Credentials
from exec_watchdog.remediator.remediate import Settings
from exec_watchdog.simulated_platform.agent_server import serve_agents
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.platform_rows import insert_execution

SECRET = "bench-secret"


def seed(url: str, n: int, agents: list[str], redis_url: str | None) -> sa.Engine:
    engine = db.create_engine(url)
    db.create_platform_tables(engine, slot_metadata)
    slots = open_slot_store(redis_url, engine)
    with engine.begin() as conn:
        for i in range(n):
            insert_execution(conn, f"e{i:05d}", agents[i % len(agents)], age_seconds=300)
    for i in range(n):
        slots.acquire(agents[i % len(agents)], f"e{i:05d}", utcnow(), "bench", 3600)
    return engine


def floor(url: str, n: int) -> float:
    engine = seed(url, n, ["a"], None)
    started = time.perf_counter()
    with engine.begin() as conn:
        for i in range(n):
            conn.execute(sa.update(schedule_executions)
                         .where(schedule_executions.c.id == f"e{i:05d}", schedule_executions.c.status == "running")
                         .values(status="failed", error="x", completed_at="2026-01-01T00:00:00.000000Z",
                                 duration_ms=1))
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def _serve_agents(names: list[str], port: int, ready: multiprocessing.synchronize.Event) -> None:
    """The agents live in their own process, as they would on their own machines."""
    async def serve() -> None:
        await serve_agents(names, SECRET, port=port)
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(serve())


async def remediate(url: str, n: int, agent_count: int, redis_url: str | None,
                    record_evidence: bool = True) -> tuple[float, float]:
    """Wall and CPU seconds of one notification's handling."""
    from exec_watchdog.testbed.servers import free_port

    names = [f"agent-{i:03d}" for i in range(agent_count)]
    engine = seed(url, n, names, redis_url)
    port, ready = free_port(), multiprocessing.Event()
    agents = multiprocessing.Process(target=_serve_agents, args=(names, port, ready), daemon=True)
    agents.start()
    ready.wait(30)
    template = f"http://127.0.0.1:{port}/agents/{{agent}}"
    config = Config(database_url=url, agent_url_template=template, agent_secret=SECRET,
                    credentials=Credentials(bearer_token="t"), redis_url=redis_url, announce_redis_url=redis_url,
                    breaker_max_actions=n * 2, record_evidence=record_evidence,
                    settings=Settings(replica="bench", min_orphan_age_seconds=60))
    app = create_app(config, CollectorRegistry())
    body = notification(*[alert(f"e{i:05d}", names[i % agent_count], fingerprint=f"{i:016x}") for i in range(n)])
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://r") as client:
            started, cpu_started = time.perf_counter(), time.process_time()
            response = await client.post("/api/v1/alerts", json=body, headers={"Authorization": "Bearer t"})
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        assert all(a["outcome"] == "recovered" for a in response.json()["alerts"])
        with engine.connect() as conn:
            failed = conn.execute(sa.select(sa.func.count()).select_from(schedule_executions)
                                  .where(schedule_executions.c.status == "failed")).scalar_one()
        assert response.status_code == 200 and failed == n, (response.status_code, failed)
        with engine.connect() as conn:
            kept = conn.execute(sa.select(sa.func.count()).select_from(decisions)
                                .where(decisions.c.evidence.is_not(None))).scalar_one()
        assert kept == (n if record_evidence else 0), kept
        return elapsed, cpu
    finally:
        agents.terminate()
        agents.join(10)
        engine.dispose()


def drop_databases(server_url: str, *urls: str) -> None:
    """Leave the server as we found it."""
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for url in urls:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{sa.make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executions", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each; medians are reported")
    parser.add_argument("--database-url", help="PostgreSQL server URL (a database per run is created)")
    parser.add_argument("--redis-url", help="Redis for slots and announcements (SQL slots when unset)")
    args = parser.parse_args()
    from exec_watchdog.common.logs import configure_logging

    configure_logging("info", "json")  # a real run logs one line per recovery: keep that cost in
    floors: list[float] = []
    runs: list[float] = []
    bare: list[float] = []
    runs_cpu: list[float] = []
    bare_cpu: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            if args.database_url:
                from exec_watchdog.testbed.servers import create_database
                floor_url, run_url, bare_url = (create_database(args.database_url) for _ in range(3))
            else:
                floor_url, run_url, bare_url = (f"sqlite:///{tmp}/{name}{i}.db" for name in ("floor", "run", "bare"))
            floors.append(floor(floor_url, args.executions))
            # Alternate which goes first, so neither always meets a warmer machine.
            for record in (True, False) if i % 2 == 0 else (False, True):
                if args.redis_url:
                    import redis
                    redis.Redis.from_url(args.redis_url).flushdb()
                url, walls, cpus = (run_url, runs, runs_cpu) if record else (bare_url, bare, bare_cpu)
                wall, cpu = asyncio.run(remediate(url, args.executions, args.agents, args.redis_url, record))
                walls.append(wall)
                cpus.append(cpu)
            if args.database_url:
                drop_databases(args.database_url, floor_url, run_url, bare_url)
            print(f"run {i + 1}: remediation {runs[-1]:.3f} s ({runs_cpu[-1]:.3f} s CPU), without evidence "
                  f"{bare[-1]:.3f} s ({bare_cpu[-1]:.3f} s CPU), floor {floors[-1]:.3f} s", file=sys.stderr)
    elapsed, base, without = statistics.median(runs), statistics.median(floors), statistics.median(bare)
    backend = sa.make_url(run_url).get_backend_name()
    print(f"database: {backend}; slots: {'redis' if args.redis_url else 'sql'}; median of {args.repeat} runs")
    print(f"one notification, {args.executions} orphan alerts on {args.agents} agents, verified, failed, released, "
          f"announced: {elapsed:.3f} s (min {min(runs):.3f}, max {max(runs):.3f}); "
          f"goal <= 2 s: {'met' if elapsed <= 2 else 'MISSED'}")
    print(f"floor, {args.executions} bare guarded updates in one transaction: {base:.3f} s")
    print(f"ratio: {elapsed / base:.2f}x the floor; goal <= 3x: {'met' if elapsed <= 3 * base else 'MISSED'}")
    ratio = statistics.median(w / b for w, b in zip(runs, bare, strict=True))
    cpu_ratio = statistics.median(w / b for w, b in zip(runs_cpu, bare_cpu, strict=True))
    print(f"evidence recorded: {elapsed:.3f} s wall, {statistics.median(runs_cpu):.3f} s CPU; without: "
          f"{without:.3f} s wall (min {min(bare):.3f}, max {max(bare):.3f}), {statistics.median(bare_cpu):.3f} s CPU")
    print(f"evidence cost: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU (medians of the per-repeat ratios); "
          f"goal <= 1.25x: {'met' if ratio <= 1.25 else 'MISSED'}")


if __name__ == "__main__":
    main()
