"""How the exporter's cost grows, and what sharding buys: one scrape at 1,000 / 10,000 / 100,000
running executions on 100 / 1,000 / 5,000 agents, one exporter against 2 and 4 shards.

    .venv/bin/python bench/bench_shards.py                      # every size, 1 / 2 / 4 shards
    .venv/bin/python bench/bench_shards.py --sizes 100000:5000 --shards 4 --scrapes 3

Per size: the platform database (SQLite, slots in its agent_slots table) filled by
bench/bench_exporter.py's ``build_database`` (5 % of the running rows unknown to their agent), and
**synthetic agents**: one process answering Trinity's ``GET /api/executions/running`` for every
agent from a registry computed up front (no OS process per execution: 100,000 ``sleep``s do not fit
here), with the real HMAC token check. Everything else is real: N ``exec-watchdog exporter``
processes with ``--shard K/N``, scraped side by side (one ``GET /metrics`` each, at the same time,
as Prometheus scrapes them). Reported per row: the side-by-side wall time (the slowest shard), each
shard's wall time, CPU and peak RSS (VmHWM), the synthetic agents' CPU, and the load average of the
machine (2 cores, shared). Goal (issue 17): 100,000 executions on 5,000 agents within a 15 s scrape
interval by 4 shards, each <= 5 s. Each shard is also scraped on its own, the others idle: on this
2-core machine N shards side by side share two cores, which N pods of a real deployment do not.
Not a timed test: it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_exporter import SECRET, _cpu, agents_child, build_database, exporter, memory_kib  # noqa: E402

GOAL_SECONDS = 5.0
SIZES = ((1_000, 100), (10_000, 1_000), (100_000, 5_000))


# -- synthetic agents: Trinity's /running from a precomputed registry -----------------------------

def serve_synthetic_child(plan_path: str) -> int:
    """Child mode: answer /agents/{name}/api/executions/running for every planned agent."""
    import uvicorn

    from exec_watchdog.platform_access.auth import TOKEN_HEADER, agent_token

    plan: dict[str, list[str]] = json.loads(Path(plan_path).read_text())
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    bodies = {agent: json.dumps({
        "executions": [{"execution_id": e, "pid": 1000 + n, "started_at": started, "metadata": {}}
                       for n, e in enumerate(ids)],
        "recently_completed_ids": [], "pending_ids": [],
    }).encode() for agent, ids in plan.items()}
    tokens = {agent: agent_token(SECRET, agent).encode() for agent in plan}
    header = TOKEN_HEADER.lower().encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        parts = scope["path"].split("/")  # "", "agents", name, "api", "executions", "running"
        agent = parts[2] if len(parts) == 6 and parts[3:] == ["api", "executions", "running"] else None
        token = dict(scope["headers"]).get(header)
        if agent not in bodies:
            status, body = 404, b'{"detail":"Not Found"}'
        elif token != tokens[agent]:
            status, body = 401, b'{"detail":"Unauthorized"}'
        else:
            status, body = 200, bodies[agent]
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def main() -> None:
        # IPPROTO_TCP explicitly, so asyncio sets TCP_NODELAY (as simulated_platform.agent_server does):
        # without it every answer waits ~40 ms for a delayed ACK. Listening before READY is printed.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen(4096)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        print(f"READY http://127.0.0.1:{sock.getsockname()[1]}/agents/{{agent}}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server.should_exit = True
        await task

    asyncio.run(main())
    return 0


# -- one configuration: N shards scraped side by side --------------------------------------------

@dataclass
class Row:
    executions: int
    agents: int
    shards: int
    side_by_side: float  # the slowest shard's wall time, median over scrapes
    shard_walls: list[float]  # per shard, median over scrapes
    alone_walls: list[float]  # per shard scraped on its own (the others idle), median over scrapes
    shard_cpu: list[float]  # per shard, median CPU seconds per scrape
    shard_rss: list[float]  # per shard, VmHWM MB
    agents_cpu: float  # the synthetic agents' CPU per round
    load: float

    def markdown(self) -> str:
        walls, cpus, rss = self.shard_walls, self.shard_cpu, self.shard_rss
        met = "yes" if max(walls) <= GOAL_SECONDS else ("alone" if max(self.alone_walls) <= GOAL_SECONDS else "no")

        def span(values: list[float], unit: str, digits: int = 2) -> str:
            if len(values) == 1:
                return f"{values[0]:.{digits}f} {unit}"
            return f"{min(values):.{digits}f} to {max(values):.{digits}f} {unit}"

        return (f"| {self.executions:,} | {self.agents:,} | {self.shards} | {self.side_by_side:.2f} s | "
                f"{span(walls, 's')} | {span(self.alone_walls, 's')} | {span(cpus, 's')} | {span(rss, 'MB', 0)} | "
                f"{self.agents_cpu:.2f} s | {self.load:.1f} | {met} |")


def scrape_all(urls: list[str]) -> list[tuple[float, str]]:
    """GET /metrics on every shard at the same moment; (wall seconds, body) per shard."""
    import httpx

    def one(url: str) -> tuple[float, str]:
        start = time.perf_counter()
        body = httpx.get(f"{url}/metrics", timeout=120).text
        return time.perf_counter() - start, body

    with ThreadPoolExecutor(len(urls)) as pool:
        return list(pool.map(one, urls))


def count_series(bodies: list[str]) -> tuple[int, int, int]:
    """(execution series, distinct execution ids, agents up) over every shard's body."""
    ids: list[str] = []
    up = 0
    for body in bodies:
        for line in body.splitlines():
            if line.startswith("exec_watchdog_execution_runtime_seconds{"):
                ids.append(line.split('execution_id="', 1)[1].split('"', 1)[0])
            elif line.startswith("exec_watchdog_agent_up{") and line.endswith(" 1.0"):
                up += 1
    return len(ids), len(set(ids)), up


def measure(database_url: str, url_template: str, agents_pid: int, executions: int, agents: int, shards: int,
            scrapes: int, concurrency: int, workdir: Path) -> Row:
    import psutil

    with ExitStack() as stack:
        started = [stack.enter_context(exporter(
            database_url, url_template, None, concurrency, workdir,
            extra=("--agent-timeout", "10", "--scrape-timeout", "60", "--shard", f"{k}/{shards}"),
            name=f"exporter-{k}")) for k in range(shards)]
        urls = [u for u, _ in started]
        procs = [psutil.Process(pid) for _, pid in started]
        agents_proc = psutil.Process(agents_pid)
        first = scrape_all(urls)  # opens the connections; checked for completeness
        series, distinct, up = count_series([b for _, b in first])
        if not series == distinct == executions or up != agents:
            raise SystemExit(f"{shards} shards: incomplete scrape ({series} series, {distinct} distinct of "
                             f"{executions} executions, {up}/{agents} agents up): the figures would mean nothing")
        walls: list[list[float]] = []
        cpus: list[list[float]] = []
        agent_cpu: list[float] = []
        for _ in range(scrapes):
            before = [_cpu(p) for p in procs]
            agents_before = _cpu(agents_proc)
            results = scrape_all(urls)
            walls.append([w for w, _ in results])
            cpus.append([_cpu(p) - b for p, b in zip(procs, before, strict=True)])
            agent_cpu.append(_cpu(agents_proc) - agents_before)
        alone = [[scrape_all([url])[0][0] for url in urls] for _ in range(scrapes)]
        rss = [memory_kib(pid)["VmHWM"] / 1024 for _, pid in started]
    per_shard_walls = [statistics.median(w[k] for w in walls) for k in range(shards)]
    return Row(executions, agents, shards, statistics.median(max(w) for w in walls), per_shard_walls,
               [statistics.median(a[k] for a in alone) for k in range(shards)],
               [statistics.median(c[k] for c in cpus) for k in range(shards)], rss,
               statistics.median(agent_cpu), os.getloadavg()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-synthetic", metavar="PLAN", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default=",".join(f"{e}:{a}" for e, a in SIZES),
                        help="EXECUTIONS:AGENTS,... (default: 1000:100,10000:1000,100000:5000)")
    parser.add_argument("--shards", default="1,2,4", help="shard counts to compare (default 1,2,4)")
    parser.add_argument("--scrapes", type=int, default=3, help="measured scrapes per configuration")
    parser.add_argument("--poll-concurrency", type=int, default=50)
    args = parser.parse_args()
    if args.serve_synthetic:
        return serve_synthetic_child(args.serve_synthetic)
    try:
        sizes = [tuple(int(x) for x in part.split(":")) for part in args.sizes.split(",")]
        shard_counts = [int(x) for x in args.shards.split(",")]
    except ValueError:
        parser.error("--sizes is EXECUTIONS:AGENTS,... and --shards a list of numbers")
    if any(len(s) != 2 or min(s) < 1 for s in sizes) or any(not 1 <= n <= 16 for n in shard_counts):
        parser.error("sizes need positive EXECUTIONS:AGENTS; shard counts are from 1 to 16")

    rows: list[Row] = []
    print("| running executions | agents | shards | scrape wall, side by side | each shard's wall, side by side | "
          "each shard's wall, alone | each shard's CPU | each shard's peak RSS | synthetic agents' CPU | "
          "load avg | each <= 5 s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for executions, agents in sizes:
        with tempfile.TemporaryDirectory(prefix="ew-shards-") as tmp:
            workdir = Path(tmp)
            database_url = f"sqlite:///{workdir / 'trinity.db'}"
            plan = build_database(database_url, agents, executions, 0.05, None)
            with agents_child(__file__, "--serve-synthetic", plan, workdir,
                              "the synthetic agents") as (url_template, agents_pid):
                for shards in shard_counts:
                    row = measure(database_url, url_template, agents_pid, executions, agents, shards,
                                  args.scrapes, args.poll_concurrency, workdir)
                    rows.append(row)
                    print(row.markdown(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
