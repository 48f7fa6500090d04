"""Benchmark: exporter scrapes with run history, at 10,000 running executions plus 1,000,000 completed rows.

    .venv/bin/python bench/bench_history.py [--completed 1000000] [--executions 10000] [--agents 1000]
                                            [--scrapes 7] [--new-per-scrape 200] [--database sqlite|postgresql]

The same set-up as bench/bench_exporter.py (real ``exec-watchdog exporter``, simulated agents with a
real process per running execution) plus a month of completed rows: 100 schedules and manual runs
on every agent. Between scrapes, ``--new-per-scrape`` runs complete, so each incremental read has
real work. Prints the first read's cost (wall time of the first scrape, which waits for it, and the
exporter's own read duration) and the median scrape after it.

Goal (issue 15): scrapes after the first stay <= 1 s (median).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_exporter import (  # noqa: E402
    _value,
    build_database,
    check,
    exporter,
    memory_kib,
    serve_agents_child,
    simulated_agents,
)


def completed_rows(count: int, agents: int, start_index: int, days: float, seed: int) -> list[dict[str, object]]:
    """``count`` completed runs over the last ``days`` days: 2/3 on 100 schedules, 1/3 manual."""
    from exec_watchdog.platform_access.timestamps import format_utc, utcnow

    rng = random.Random(seed)
    now = utcnow()
    rows = []
    for n in range(start_index, start_index + count):
        agent = f"agent-{n % agents:04d}"
        seconds = rng.lognormvariate(4.5, 1.0)
        completed = now - timedelta(seconds=rng.uniform(0, days * 86400))
        roll = rng.random()
        status = "success" if roll < 0.9 else "failed" if roll < 0.97 else "cancelled"
        rows.append({
            "id": f"done-{n:08d}", "schedule_id": f"sched-{n % 100:03d}" if n % 3 else "__manual__",
            "agent_name": agent if n % 3 == 0 else f"agent-{(n % 100) % agents:04d}", "status": status,
            "message": "benchmark", "triggered_by": "schedule",
            "started_at": format_utc(completed - timedelta(seconds=seconds)), "completed_at": format_utc(completed),
            "duration_ms": int(seconds * 1000), "response": "ok" if status == "success" else None,
            "error": None if status == "success" else "exit code 1",
        })
    return rows


def insert_completed(url: str, rows: list[dict[str, object]]) -> None:
    import sqlalchemy as sa

    from exec_watchdog.platform_access.database import create_engine
    from exec_watchdog.platform_access.schema import schedule_executions

    engine = create_engine(url)
    with engine.begin() as conn:
        for i in range(0, len(rows), 50_000):
            conn.execute(sa.insert(schedule_executions), rows[i:i + 50_000])
    engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-agents", metavar="PLAN", help=argparse.SUPPRESS)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--completed", type=int, default=1_000_000)
    parser.add_argument("--scrapes", type=int, default=7)
    parser.add_argument("--new-per-scrape", type=int, default=200)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    if args.serve_agents:
        return serve_agents_child(args.serve_agents)

    import httpx

    from exec_watchdog.testbed.servers import throwaway_database

    with tempfile.TemporaryDirectory(prefix="ew-bench-history-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        database_url = stack.enter_context(throwaway_database(args.database, workdir))
        started = time.perf_counter()
        plan = build_database(database_url, args.agents, args.executions, 0.05, None)
        insert_completed(database_url, completed_rows(args.completed, args.agents, 0, 30, seed=15))
        print(f"database: {args.executions} running + {args.completed} completed rows, {args.agents} agents "
              f"({args.database}) in {time.perf_counter() - started:.1f} s")
        url_template, _agents_pid = stack.enter_context(simulated_agents(plan, workdir))
        base, pid = stack.enter_context(exporter(database_url, url_template, None, 50, workdir))

        walls, reads, sizes, gathers = [], [], [], []
        with httpx.Client(base_url=base, timeout=120) as http:
            start = time.perf_counter()
            body = http.get("/metrics").text
            while _value(body, "exec_watchdog_exporter_history_ready") != 1:  # first read longer than a scrape
                body = http.get("/metrics").text
            first_wall = time.perf_counter() - start
            first_read = _value(body, "exec_watchdog_exporter_history_read_duration_seconds")
            check(body, args.executions, args.agents)
            series = sum(1 for line in body.splitlines() if line.startswith("exec_watchdog_schedule_"))
            for n in range(args.scrapes):
                insert_completed(database_url, completed_rows(args.new_per_scrape, args.agents,
                                                              args.completed + n * args.new_per_scrape, 0.001, n))
                start = time.perf_counter()
                body = http.get("/metrics").text
                walls.append(time.perf_counter() - start)
                reads.append(_value(body, "exec_watchdog_exporter_history_read_duration_seconds"))
                gathers.append(_value(body, "exec_watchdog_exporter_scrape_duration_seconds"))
                sizes.append(len(body))
        counted = sum(float(line.split()[-1]) for line in body.splitlines()
                      if line.startswith("exec_watchdog_schedule_run_duration_seconds_count{"))
        expected = args.completed + args.scrapes * args.new_per_scrape
        mem = memory_kib(pid)

    print(f"history series (schedule histograms, watchdog counters, timeouts): {series}")
    print(f"first read (full aggregate of {args.completed} rows): first scrape wall {first_wall:.2f} s, "
          f"exporter's read {first_read:.2f} s")
    print(f"scrapes after the first ({args.new_per_scrape} new completed rows each): median "
          f"{statistics.median(walls):.3f} s, max {max(walls):.3f} s (goal <= 1 s); of which gathering "
          f"(db + polls + slots) median {statistics.median(gathers):.3f} s, then the incremental history read "
          f"median {statistics.median(reads):.3f} s; {statistics.median(sizes) / 1e6:.1f} MB of text")
    print(f"completed runs counted {counted:.0f} of {expected} (must be equal: nothing lost, nothing twice)")
    print(f"exporter peak RSS (VmHWM): {mem['VmHWM'] / 1024:.1f} MB")
    if counted != expected:
        raise SystemExit("the history counters do not match the table")
    return 0


if __name__ == "__main__":
    sys.exit(main())
