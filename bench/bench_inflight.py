"""In-flight verdicts for a whole scrape: one round trip, as Trinity's watchdog does it (one MGET).

    .venv/bin/python bench/bench_inflight.py [--ids 10000] [--alive 1000] [--marker-bytes 100]

Reads the verdict of ``--ids`` executions, ``--alive`` of them with a live marker of
``--marker-bytes`` bytes, from a real Redis (``RedisInflight.verdicts``: ``TYPE`` of every key sent at once,
no value transferred) and from the embedded default's SQLite table (``SqlInflight.verdicts``).
Compared with MGET in chunks of 500 (Trinity's read, and ours before issue 25: every marker's
value crosses the wire) and one GET per id (the naive reading); Redis's own count of bytes sent
shows what each costs in transfer. Goal: the exporter can afford it on every scrape, <= 50 ms for
10,000 ids on Redis.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.inflight import RedisInflight, SqlInflight, Verdict, marker_key
from exec_watchdog.platform_access.slots import slot_metadata
from exec_watchdog.testbed.servers import redis_server


def median_seconds(run: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids", type=int, default=10_000)
    parser.add_argument("--alive", type=int, default=1_000)
    parser.add_argument("--marker-bytes", type=int, default=100, help="size of each live marker's value")
    args = parser.parse_args()
    ids = [f"exec-{n:06d}" for n in range(args.ids)]
    alive = set(ids[:: max(1, args.ids // max(1, args.alive))][: args.alive])

    with redis_server() as url:
        client = redis.Redis.from_url(url)
        store = RedisInflight(client)
        value = b"x" * args.marker_bytes
        for execution_id in alive:
            client.set(marker_key(execution_id), value, ex=600)
        found = store.verdicts(ids)
        assert {i for i, v in found.items() if v is Verdict.ALIVE} == alive

        def sent(read: Callable[[], object]) -> int:
            before = int(client.info("stats")["total_net_output_bytes"])
            read()
            return int(client.info("stats")["total_net_output_bytes"]) - before

        keys = [marker_key(i) for i in ids]
        mget = lambda: [client.mget(keys[n:n + 500]) for n in range(0, len(keys), 500)]  # noqa: E731
        ours, ours_bytes = median_seconds(lambda: store.verdicts(ids)), sent(lambda: store.verdicts(ids))
        mget_time, mget_bytes = median_seconds(mget), sent(mget)
        naive = median_seconds(lambda: [client.get(k) for k in keys])
        client.close()

    with tempfile.TemporaryDirectory() as tmp:
        engine = db.create_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        db.create_platform_tables(engine, slot_metadata)
        table = SqlInflight(engine)
        for execution_id in alive:
            table.mark(execution_id, "agent-1", "parked", time.time(), 1)
        sql = median_seconds(lambda: table.verdicts(ids))
        engine.dispose()

    print(f"{args.ids} ids, {len(alive)} with a live marker of {args.marker_bytes} bytes; median of 5 runs")
    print(f"redis, TYPE per key, sent at once (ours): {ours * 1000:.1f} ms, {ours_bytes / 1024:.0f} KiB sent;"
          f" goal <= 50 ms: {'met' if ours <= 0.05 else 'MISSED'}")
    print(f"redis, MGET in chunks of 500 (Trinity's): {mget_time * 1000:.1f} ms, {mget_bytes / 1024:.0f} KiB sent;"
          f" ratio ours/MGET {ours / mget_time:.2f}x time, {ours_bytes / max(1, mget_bytes):.4f}x bytes")
    print(f"redis, one GET per id (baseline): {naive * 1000:.1f} ms; ratio {naive / ours:.1f}x faster")
    print(f"sqlite table (the embedded default): {sql * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
