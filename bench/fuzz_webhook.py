"""A longer fuzz run of the webhook than the test suite affords, with figures.

    .venv/bin/python bench/fuzz_webhook.py [--examples 2000] [--postgres] [--seed N]

Runs the properties of tests/test_fuzz_webhook.py against the same world (``exec_watchdog.testbed.fuzz``:
the real app, Redis, SQLite or a throwaway PostgreSQL, simulated agents running real processes) with
many more examples, then prints per property: examples, requests per second, status codes, latency
percentiles; and for the run: resident memory before and after, whether anything changed, and
whether the process still recovers a real orphan and a real overdue execution afterwards.
Exits 1 when an invariant breaks (Hypothesis prints the smallest failing example).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exec_watchdog.testbed.fuzz.strategies import (
    broken_notifications,
    hostile_alerts,
    json_bytes,
    json_values,
    malformed_bytes,
)
from exec_watchdog.testbed.fuzz.world import World, check_harmless
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.servers import redis_server, throwaway_database


@dataclass
class Figures:
    name: str
    latencies: list[float] = field(default_factory=list)
    codes: collections.Counter[int] = field(default_factory=collections.Counter)
    wall: float = 0.0

    def record(self, started: float, response: httpx.Response) -> None:
        self.latencies.append(time.perf_counter() - started)
        self.codes[response.status_code] += 1

    def line(self) -> str:
        n = len(self.latencies)
        if n == 0:
            return f"{self.name:<28} no examples"
        cuts = statistics.quantiles(self.latencies, n=100) if n > 1 else self.latencies * 99
        codes = " ".join(f"{code}:{count}" for code, count in sorted(self.codes.items()))
        return (f"{self.name:<28} {n:>6} examples  {n / self.wall:>7.0f}/s  p50 {cuts[49] * 1000:6.1f} ms  "
                f"p99 {cuts[98] * 1000:6.1f} ms  max {max(self.latencies) * 1000:7.1f} ms  [{codes}]")


def run_property(world: World, before: dict[str, Any], name: str, strategy: st.SearchStrategy[Any],
                 send: Callable[[Any], httpx.Response], examples: int, seed_value: int) -> Figures:
    figures = Figures(name)

    @seed(seed_value)
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(value=strategy)
    def prop(value: Any) -> None:
        started = time.perf_counter()
        response = send(value)
        figures.record(started, response)
        check_harmless(response, world, before)

    started = time.perf_counter()
    prop()
    figures.wall = time.perf_counter() - started
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2000, help="examples per property")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL instead of SQLite")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis seed, for a reproducible run")
    args = parser.parse_args()
    if args.examples < 1:
        parser.error("--examples must be at least 1")

    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis_url, \
            throwaway_database("postgresql" if args.postgres else "sqlite", Path(tmp)) as database_url:
        world = World(database_url, redis_url)
        try:
            return fuzz(world, args.examples, args.seed, database_url)
        finally:
            world.close()


def fuzz(world: World, examples: int, seed_value: int, database_url: str) -> int:
    process = psutil.Process()
    rss_before = process.memory_info().rss
    before = world.snapshot()
    properties: list[tuple[str, st.SearchStrategy[Any], Callable[[Any], httpx.Response]]] = [
        ("broken notifications", broken_notifications(), lambda body: world.post_body(json_bytes(body))),
        ("fuzzed labels", st.lists(hostile_alerts(), min_size=1, max_size=5),
         lambda alerts: world.post_body(json_bytes(notification(*alerts)))),
        ("malformed bytes", malformed_bytes(), world.post_body),
        ("arbitrary JSON", json_values, lambda body: world.post_body(json_bytes(body))),
    ]
    print(f"database: {database_url.split(':', 1)[0]}; {examples} examples per property; seed {seed_value}")
    failed = False
    for name, strategy, send in properties:
        try:
            print(run_property(world, before, name, strategy, send, examples, seed_value).line(), flush=True)
        except Exception as exc:  # Hypothesis has printed the falsifying example
            print(f"{name:<28} FAILED: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
            failed = True
    unchanged = world.snapshot() == before
    announced = world.announcements()
    rss_after = process.memory_info().rss
    print(f"resident memory: {rss_before / 2**20:.0f} MiB before, {rss_after / 2**20:.0f} MiB after "
          "(test process: app, client and Hypothesis together)")
    print(f"database, Redis and agents unchanged: {'yes' if unchanged else 'NO'}; "
          f"announcements: {len(announced)}")
    healthy = world.request("GET", "/healthz").status_code == 200 and \
        world.request("GET", "/readyz").json().get("status") == "ready"
    response = world.post_body(json_bytes(notification(alert("e-orphan", "a1"),
                                                   alert("e-overdue", "a2", "terminate_overdue"))))
    outcomes = sorted(a["outcome"] for a in response.json().get("alerts", []))
    print(f"afterwards: healthz/readyz {'ok' if healthy else 'FAILING'}; a valid notification got "
          f"{response.status_code} {json.dumps(outcomes)}")
    ok = not failed and unchanged and not announced and healthy and outcomes == ["recovered", "recovered"]
    print("result:", "all invariants held" if ok else "AN INVARIANT BROKE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
