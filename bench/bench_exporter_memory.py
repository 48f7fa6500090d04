"""Benchmark: the exporter's (and the remediator's) peak memory when agents answer huge polls
or in-flight markers are huge.

    .venv/bin/python bench/bench_exporter_memory.py [--shapes fleet,answers,markers]
        [--agents 1000] [--mib 5] [--poll-concurrency 50]

Shapes (issues 13 and 25), each measured in a fresh child process (VmHWM from /proc):

* ``fleet``: 1,000 agents each answering ``GET /api/executions/running`` with a 5 MiB JSON body
  (bulky metadata), run twice: with the transport's body budget, and with budgets so large they
  never bind (the baseline);
* ``answers``: few agents with huge answers: 3 x 31 MiB and 12 x 5 MiB, each in three body kinds:
  ``minimal`` (executions of only an id, 42 bytes each: the most objects per byte a valid answer
  has), ``dense`` (Trinity-shaped executions of ~260 bytes with small metadata) and ``bulky``
  (40 KB of metadata per execution);
* ``markers``: 30 in-flight markers of 5 MiB in a real Redis (``execution:inflight:{id}``), read
  for 30 running rows their agents do not know: by the exporter's gather, and by the remediator's
  marker read (``RedisInflight.verdicts`` in a process that has loaded the remediator app, which is
  what its orphan check calls).

Processes: this script builds the platform database; a server child answers every agent's poll
with one prebuilt response; the measured child runs the real :class:`~exec_watchdog.exporter.gather.Gatherer`
with :class:`~exec_watchdog.platform_access.poll_transport.PollTransport`, scraping once.
Goal (issues 13 and 25): peak RSS <= 256 MiB in every shape, whatever the agents answer; an
answer too large to hold is refused for its agent ("agent answer too large"), never misread.
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
GOAL_MIB = 256
MIB = 1024 * 1024
MARKERS, MARKER_MIB = 30, 5


def _response(mib: float, kind: str) -> bytes:
    if kind == "empty":
        body = b'{"executions": [], "recently_completed_ids": [], "pending_ids": []}'
    elif kind == "minimal":
        count = int(mib * MIB) // 42
        body = (b'{"executions":[' + b",".join(b'{"execution_id":"%022d"}' % i for i in range(count))
                + b'],"recently_completed_ids":[],"pending_ids":[]}')
    elif kind == "dense":
        entries, size, index = [], 0, 0
        while size < mib * MIB:
            entry = (b'{"execution_id":"%022d","pid":%d,"started_at":"2026-11-27T12:00:00.123456","metadata":'
                     b'{"schedule_id":"nightly-%d","triggered_by":"schedule","message_preview":"%s"}}'
                     % (index, 1000 + index, index % 50, b"m" * 100))
            entries.append(entry)
            size += len(entry) + 1
            index += 1
        body = b'{"executions":[' + b",".join(entries) + b'],"recently_completed_ids":[],"pending_ids":[]}'
    else:
        blob = "x" * 40_000
        executions, total = [], 0
        index = 0
        while total < mib * MIB:
            executions.append({"execution_id": f"run-{index:06d}", "pid": 1000 + index,
                               "started_at": "2026-11-27T12:00:00", "metadata": {"note": blob}})
            total += len(blob) + 100
            index += 1
        body = json.dumps({"executions": executions, "recently_completed_ids": [], "pending_ids": []}).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


async def _serve(port_file: Path, mib: float, kind: str) -> None:
    response = _response(mib, kind)

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


def _peak_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024


async def _gather(database: str, port: int, budget: int, concurrency: int, redis_url: str) -> None:
    from exec_watchdog.exporter.gather import Gatherer
    from exec_watchdog.platform_access import database as db
    from exec_watchdog.platform_access.agent_client import AgentClient
    from exec_watchdog.platform_access.inflight import RedisInflight
    from exec_watchdog.platform_access.poll_transport import PollTransport

    options: dict[str, object] = {}
    try:  # absent before issue 25: the same script measures the code it came from, and older code
        from exec_watchdog.platform_access.answer_limits import DEFAULT_PARSE_BUDGET_BYTES, ParseBudget
        options["parse_budget"] = ParseBudget(DEFAULT_PARSE_BUDGET_BYTES if budget < UNBOUNDED else UNBOUNDED)
    except ImportError:
        pass
    engine = db.create_engine(database)
    transport = PollTransport(max_connections=concurrency, body_budget_bytes=budget)
    client = AgentClient(f"http://127.0.0.1:{port}/agents/{{agent}}", "bench-secret", timeout=120.0,
                         max_connections=concurrency, transport=transport, **options)  # type: ignore[arg-type]
    markers = RedisInflight.from_url(redis_url, timeout=60.0) if redis_url else None
    gatherer = Gatherer(engine, client, None, agent_timeout=120.0, poll_concurrency=concurrency,
                        scrape_timeout=1800.0, database_timeout=60.0, inflight=markers)
    idle = _peak_mib()
    snapshot = await gatherer.gather()
    await client.aclose()
    parse = getattr(client, "parse_budget", None)
    print(json.dumps({"peak_rss_mb": _peak_mib(), "idle_mb": idle, "agents_up": sum(a.up for a in snapshot.agents),
                      "agents": len(snapshot.agents),
                      "too_large": sum(a.poll_error == "too_large" for a in snapshot.agents),
                      "budget_peak_mb": transport.budget.peak / MIB,
                      "parse_peak_mb": parse.peak / MIB if parse is not None else 0.0,
                      "held": sum(bool(e.dispatch_inflight) for e in snapshot.executions)}))


def _remediator_markers(redis_url: str, ids: list[str]) -> None:
    import exec_watchdog.remediator.app  # noqa: F401  (the remediator's process, loaded as it runs)
    from exec_watchdog.platform_access.inflight import RedisInflight, Verdict

    idle = _peak_mib()
    verdicts = RedisInflight.from_url(redis_url, timeout=60.0).verdicts(ids)
    print(json.dumps({"peak_rss_mb": _peak_mib(), "idle_mb": idle,
                      "alive": sum(v is Verdict.ALIVE for v in verdicts.values()), "asked": len(ids)}))


def _build_database(path: Path, agents: int, rows_per_agent: int = 1, prefix: str = "exec") -> str:
    from exec_watchdog.platform_access import database as db
    from exec_watchdog.testbed.platform_rows import insert_agent, insert_execution

    url = f"sqlite:///{path}"
    engine = db.create_engine(url)
    db.create_platform_tables(engine)
    with engine.begin() as conn:
        for i in range(agents):
            insert_agent(conn, f"agent-{i:04d}")
            for j in range(rows_per_agent):
                insert_execution(conn, f"{prefix}-{i:04d}-{j:02d}", f"agent-{i:04d}", age_seconds=600)
    engine.dispose()
    return url


class _Server:
    """The response server child: every agent's poll gets the same prebuilt answer."""

    def __init__(self, tmp: Path, mib: float, kind: str) -> None:
        self._port_file = tmp / f"port-{kind}-{mib:g}"
        self._port_file.unlink(missing_ok=True)  # a previous server's, for the same answer
        self._proc = subprocess.Popen([sys.executable, __file__, "--serve", str(self._port_file), "--mib", str(mib),
                                       "--kind", kind])

    def __enter__(self) -> int:
        from exec_watchdog.testbed.servers import wait_for_port

        while not self._port_file.exists() or not self._port_file.read_text():
            if self._proc.poll() is not None:
                raise SystemExit("the response server died")
            time.sleep(0.05)
        port = int(self._port_file.read_text())
        wait_for_port(port)
        return port

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        self._proc.wait(10)


def _child(*args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True, cwd=ROOT)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _verdict(peak: float) -> str:
    return f"ratio to the {GOAL_MIB} MiB goal {peak / GOAL_MIB:.2f} ({'met' if peak <= GOAL_MIB else 'MISSED'})"


def _fleet(tmp: Path, args: argparse.Namespace) -> list[float]:
    from exec_watchdog.platform_access.poll_transport import DEFAULT_BODY_BUDGET_BYTES

    database = _build_database(tmp / "fleet.db", args.agents)
    results = {}
    with _Server(tmp, args.mib, "bulky") as port:
        for name, budget in (("budget", DEFAULT_BODY_BUDGET_BYTES), ("baseline (no budget)", UNBOUNDED)):
            r = results[name] = _child("--gather", database, str(port), str(budget),
                                       "--poll-concurrency", str(args.poll_concurrency))
            print(f"  fleet {args.agents} x {args.mib:g} MiB bulky, {name:>20}: peak RSS {r['peak_rss_mb']:7.1f} MiB"
                  f" (idle {r['idle_mb']:.1f}), bodies held at once {r['budget_peak_mb']:6.1f} MiB,"
                  f" agents answered {r['agents_up']:.0f}/{r['agents']:.0f}", flush=True)
    with_budget, baseline = results["budget"]["peak_rss_mb"], results["baseline (no budget)"]["peak_rss_mb"]
    print(f"fleet: peak RSS {with_budget:.1f} MiB, baseline {baseline:.1f} MiB, ratio {with_budget / baseline:.2f};"
          f" {_verdict(with_budget)}")
    return [with_budget]


def _answers(tmp: Path, args: argparse.Namespace) -> list[float]:
    from exec_watchdog.platform_access.poll_transport import DEFAULT_BODY_BUDGET_BYTES

    peaks = []
    for agents, mib in ((3, 31.0), (12, 5.0)):
        database = _build_database(tmp / f"answers-{agents}.db", agents)
        for kind in ("minimal", "dense", "bulky"):
            with _Server(tmp, mib, kind) as port:
                r = _child("--gather", database, str(port), str(DEFAULT_BODY_BUDGET_BYTES),
                           "--poll-concurrency", str(args.poll_concurrency))
            peaks.append(r["peak_rss_mb"])
            print(f"answers {agents:>2} x {mib:g} MiB {kind:>5}: exporter peak RSS {r['peak_rss_mb']:6.1f} MiB"
                  f" (idle {r['idle_mb']:.1f}); answered {r['agents_up']:.0f}, too large {r['too_large']:.0f}"
                  f" of {r['agents']:.0f}; bodies held at once {r['budget_peak_mb']:.1f} MiB, parses at once"
                  f" {r['parse_peak_mb']:.1f} MiB; {_verdict(r['peak_rss_mb'])}", flush=True)
    return peaks


def _markers(tmp: Path, args: argparse.Namespace) -> list[float]:
    import redis

    from exec_watchdog.platform_access.inflight import marker_key
    from exec_watchdog.platform_access.poll_transport import DEFAULT_BODY_BUDGET_BYTES
    from exec_watchdog.testbed.servers import redis_server

    agents = 3
    database = _build_database(tmp / "markers.db", agents, MARKERS // agents, prefix="marked")
    ids = [f"marked-{i:04d}-{j:02d}" for i in range(agents) for j in range(MARKERS // agents)]
    blob = b"x" * (MARKER_MIB * MIB)
    peaks = []
    with redis_server() as redis_url:
        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        for execution_id in ids:
            client.set(marker_key(execution_id), blob, ex=3600)
        with _Server(tmp, 0, "empty") as port:
            r = _child("--gather", database, str(port), str(DEFAULT_BODY_BUDGET_BYTES),
                       "--poll-concurrency", str(args.poll_concurrency), "--redis", redis_url)
        peaks.append(r["peak_rss_mb"])
        print(f"markers {MARKERS} x {MARKER_MIB} MiB: exporter peak RSS {r['peak_rss_mb']:6.1f} MiB"
              f" (idle {r['idle_mb']:.1f}); rows held as in flight {r['held']:.0f}/{len(ids)};"
              f" {_verdict(r['peak_rss_mb'])}", flush=True)
        ids_file = tmp / "marker-ids.json"
        ids_file.write_text(json.dumps(ids))
        r = _child("--remediator-markers", redis_url, str(ids_file))
        peaks.append(r["peak_rss_mb"])
        print(f"markers {MARKERS} x {MARKER_MIB} MiB: remediator peak RSS {r['peak_rss_mb']:6.1f} MiB"
              f" (idle {r['idle_mb']:.1f}); alive {r['alive']:.0f}/{r['asked']:.0f}; {_verdict(r['peak_rss_mb'])}",
              flush=True)
        client.flushdb()
        client.close()
    return peaks


SHAPES = {"fleet": _fleet, "answers": _answers, "markers": _markers}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="fleet,answers,markers",
                        help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--agents", type=int, default=1000, help="fleet shape: agents")
    parser.add_argument("--mib", type=float, default=5.0, help="fleet shape: MiB per answer")
    parser.add_argument("--poll-concurrency", type=int, default=50)
    parser.add_argument("--kind", default="bulky", help=argparse.SUPPRESS)
    parser.add_argument("--redis", default="", help=argparse.SUPPRESS)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--gather", nargs=3, metavar=("DATABASE", "PORT", "BUDGET"), help=argparse.SUPPRESS)
    parser.add_argument("--remediator-markers", nargs=2, metavar=("REDIS", "IDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(Path(args.serve), args.mib, args.kind))
        return 0
    if args.gather:
        asyncio.run(_gather(args.gather[0], int(args.gather[1]), int(args.gather[2]), args.poll_concurrency,
                            args.redis))
        return 0
    if args.remediator_markers:
        _remediator_markers(args.remediator_markers[0], json.loads(Path(args.remediator_markers[1]).read_text()))
        return 0
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = set(shapes) - set(SHAPES)
    if unknown:
        parser.error(f"unknown shapes {sorted(unknown)}; choose from {', '.join(SHAPES)}")
    peaks: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ew-bench-mem-") as tmp:
        for shape in shapes:
            peaks += SHAPES[shape](Path(tmp), args)
    worst = max(peaks)
    print(f"worst peak RSS {worst:.1f} MiB; {_verdict(worst)}")
    return 0 if worst <= GOAL_MIB else 1


if __name__ == "__main__":
    raise SystemExit(main())
