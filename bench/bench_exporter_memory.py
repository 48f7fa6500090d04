"""Benchmark: the exporter's peak memory when every agent answers a huge poll.

    .venv/bin/python bench/bench_exporter_memory.py [--agents 1000] [--mib 5] [--poll-concurrency 50]

1,000 agents each answering ``GET /api/executions/running`` with a 5 MiB JSON body (a registry of
executions with bulky metadata). Three processes, so each number belongs to the right one:

* this script: builds the platform database (one running row per agent);
* a server child answering every agent's poll with the same prebuilt 5 MiB response;
* a gatherer child: the exporter's real :class:`~exec_watchdog.exporter.gather.Gatherer` and
  :class:`~exec_watchdog.platform_access.poll_transport.PollTransport`, scraping once; it reports its peak RSS
  (VmHWM from /proc) and how many agents answered.

It runs the gatherer twice: with the transport's default body budget, and with a budget so large
it never binds (the behaviour before the budget existed, the baseline). Goal (issue 13): peak RSS
<= 256 MB with the budget.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
UNBOUNDED = 1 << 40


def _response(mib: float) -> bytes:
    blob = "x" * 40_000
    executions, size = [], 0
    index = 0
    while size < mib * 1024 * 1024:
        entry = {"execution_id": f"run-{index:06d}", "pid": 1000 + index, "started_at": "2026-11-27T12:00:00",
                 "metadata": {"note": blob}}
        executions.append(entry)
        size += len(blob) + 100
        index += 1
    body = json.dumps({"executions": executions, "recently_completed_ids": [], "pending_ids": []}).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


async def _serve(port_file: Path, mib: float) -> None:
    response = _response(mib)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=1 << 20)
    await asyncio.to_thread(port_file.write_text, str(server.sockets[0].getsockname()[1]))
    async with server:
        await server.serve_forever()


async def _gather(database: str, port: int, budget: int, concurrency: int) -> None:
    from exec_watchdog.exporter.gather import Gatherer
    from exec_watchdog.platform_access import database as db
    from exec_watchdog.platform_access.agent_client import AgentClient
    from exec_watchdog.platform_access.poll_transport import PollTransport

    engine = db.create_engine(database)
    transport = PollTransport(max_connections=concurrency, body_budget_bytes=budget)
    client = AgentClient(f"http://127.0.0.1:{port}/agents/{{agent}}", "bench-secret", timeout=120.0,
                         max_connections=concurrency, transport=transport)
    gatherer = Gatherer(engine, client, None, agent_timeout=120.0, poll_concurrency=concurrency,
                        scrape_timeout=1800.0, database_timeout=60.0)
    snapshot = await gatherer.gather()
    await client.aclose()
    status = await asyncio.to_thread(Path("/proc/self/status").read_text)
    peak_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"peak_rss_mb": peak_kb / 1024, "agents_up": sum(a.up for a in snapshot.agents),
                      "agents": len(snapshot.agents), "budget_peak_mb": transport.budget.peak / 2**20}))


def _build_database(path: Path, agents: int) -> str:
    from exec_watchdog.platform_access import database as db
    from exec_watchdog.testbed.platform_rows import insert_agent, insert_execution

    url = f"sqlite:///{path}"
    engine = db.create_engine(url)
    db.create_platform_tables(engine)
    with engine.begin() as conn:
        for i in range(agents):
            insert_agent(conn, f"agent-{i:04d}")
            insert_execution(conn, f"exec-{i:04d}", f"agent-{i:04d}", age_seconds=30)
    engine.dispose()
    return url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--mib", type=float, default=5.0)
    parser.add_argument("--poll-concurrency", type=int, default=50)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--gather", nargs=3, metavar=("DATABASE", "PORT", "BUDGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(Path(args.serve), args.mib))
        return 0
    if args.gather:
        asyncio.run(_gather(args.gather[0], int(args.gather[1]), int(args.gather[2]), args.poll_concurrency))
        return 0

    from exec_watchdog.platform_access.poll_transport import DEFAULT_BODY_BUDGET_BYTES
    from exec_watchdog.testbed.servers import wait_for_port

    with tempfile.TemporaryDirectory(prefix="ew-bench-mem-") as tmp:
        database = _build_database(Path(tmp) / "trinity.db", args.agents)
        port_file = Path(tmp) / "port"
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file), "--mib", str(args.mib)])
        try:
            while not port_file.exists() or not port_file.read_text():
                if server.poll() is not None:
                    raise SystemExit("the response server died")
                time.sleep(0.05)
            port = int(port_file.read_text())
            wait_for_port(port)
            results = {}
            for name, budget in (("budget", DEFAULT_BODY_BUDGET_BYTES), ("baseline (no budget)", UNBOUNDED)):
                out = subprocess.run([sys.executable, __file__, "--gather", database, str(port), str(budget),
                                      "--poll-concurrency", str(args.poll_concurrency)],
                                     capture_output=True, text=True, check=True, cwd=ROOT)
                results[name] = json.loads(out.stdout.strip().splitlines()[-1])
                r = results[name]
                print(f"{name:>22}: peak RSS {r['peak_rss_mb']:7.1f} MB, bodies held at once {r['budget_peak_mb']:6.1f}"
                      f" MiB, agents answered {r['agents_up']}/{r['agents']}", flush=True)
        finally:
            server.terminate()
            server.wait(10)
    with_budget = results["budget"]["peak_rss_mb"]
    baseline = results["baseline (no budget)"]["peak_rss_mb"]
    print(f"{args.agents} agents x {args.mib:g} MiB, {args.poll_concurrency} polls in flight: "
          f"peak RSS {with_budget:.1f} MB (goal <= 256), baseline {baseline:.1f} MB, "
          f"ratio {with_budget / baseline:.2f}")
    return 0 if with_budget <= 256 else 1


if __name__ == "__main__":
    raise SystemExit(main())
