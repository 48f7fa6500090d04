"""`exec-watchdog simulate`: a simulated Trinity platform with a chosen mix of faults."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from exec_watchdog.common.flags import add_flag
from exec_watchdog.platform_access import DEFAULT_DATABASE_URL


def register(commands: Any) -> None:
    p = commands.add_parser(
        "simulate", help="run simulated agents (real processes) and a scheduler that loses track of some runs",
        description="Serve N simulated Trinity agents on one port (URL template printed at start) and start "
                    "executions on them at a steady rate, with faults: lost completion reports (orphans; "
                    "retained_success: the agent kept the success), hung processes (overdue), late reports "
                    "and dispatches held in the backend (inflight; both must never be failed), agent "
                    "restarts and outages. Writes to the platform database, the capacity slots and the "
                    "in-flight markers like Trinity's backend does.",
        epilog="example: exec-watchdog simulate --agents 5 --rate 2 --duration 60 "
               "--faults lose_report=0.2,retained_success=0.05,hang=0.05,late_report=0.1,inflight=0.05 "
               "--restart-every 30")
    add_flag(p, "--database-url", default=DEFAULT_DATABASE_URL,
             help="platform database (created if it is a new SQLite file)")
    add_flag(p, "--redis-url", help="capacity slots and in-flight markers in Redis; SQL tables when unset")
    add_flag(p, "--listen", default="127.0.0.1:0", help="host:port for the agents (port 0 picks a free one)")
    add_flag(p, "--agent-secret", default="simulated-agent-secret", help="shared secret agents verify tokens with")
    add_flag(p, "--agents", type=int, default=5, help="number of simulated agents")
    add_flag(p, "--rate", type=float, default=1.0, help="executions started per second")
    add_flag(p, "--duration", type=float, default=60.0, help="seconds to keep starting executions")
    add_flag(p, "--run-seconds", default="2,6", help="min,max seconds a normal execution runs")
    add_flag(p, "--timeout", type=int, default=20, help="timeout_seconds of the simulated schedules")
    add_flag(p, "--faults", help="execution fault mix, NAME=SHARE,... (default: lose_report=0.1, "
             "retained_success=0.05, hang=0.05, late_report=0.1, inflight=0.05)")
    add_flag(p, "--hold", type=float, default=30.0,
             help="seconds the backend holds an 'inflight' dispatch before the agent gets it")
    add_flag(p, "--restart-every", type=float, default=0.0, help="restart a random agent every N seconds (0: never)")
    add_flag(p, "--outage-every", type=float, default=0.0, help="take a random agent down every N seconds (0: never)")
    add_flag(p, "--seed", type=int, help="random seed, for a repeatable run")
    add_flag(p, "--platform-cleanup-interval", type=float, default=0.0,
             help="run a model of Trinity's own cleanup service (start-up sweep, then one cycle every N "
                  "seconds; Trinity's is 300); 0: off")
    add_flag(p, "--platform-cleanup-paths", default="all",
             help="the cleanup paths it runs, comma-separated: watchdog, stale, no_session, skipped, "
                  "stale_activities, slots, backlog, activities (closing a recovered run's activity), or all")
    add_flag(p, "--platform-cleanup-shadow", action="store_true",
             help="the platform's cleanup decides and prints what it would do, and changes nothing")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from exec_watchdog.simulated_platform.platform_cleanup import parse_paths
    from exec_watchdog.simulated_platform.workload import DEFAULT_MIX, Workload, parse_mix

    try:
        low, _, high = args.run_seconds.partition(",")
        workload = Workload(rate_per_second=args.rate, duration_seconds=args.duration,
                            run_seconds=(float(low), float(high or low)),
                            mix=parse_mix(args.faults) if args.faults is not None else dict(DEFAULT_MIX),
                            agent_restart_every=args.restart_every, agent_outage_every=args.outage_every,
                            seed=args.seed)
        if not 1 <= args.agents <= 10_000:
            raise ValueError("--agents must be from 1 to 10000")
        if not 0 <= args.hold <= 3600:
            raise ValueError("--hold must be from 0 to 3600 seconds")
        if not 0 <= args.platform_cleanup_interval <= 86_400:
            raise ValueError("--platform-cleanup-interval must be from 0 (off) to 86400 seconds")
        args.platform_cleanup_paths = parse_paths(args.platform_cleanup_paths)
        host, _, port = args.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--listen {args.listen!r} must be host:port")
    except ValueError as exc:
        print(f"exec-watchdog simulate: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_simulate(args, workload, host, int(port)))


async def _simulate(args: argparse.Namespace, workload: Any, host: str, port: int) -> int:
    import sqlalchemy as sa

    from exec_watchdog.platform_access.database import create_engine, create_platform_tables
    from exec_watchdog.platform_access.inflight import open_inflight_store
    from exec_watchdog.platform_access.slots import open_slot_store, slot_metadata
    from exec_watchdog.simulated_platform.agent_server import serve_agents
    from exec_watchdog.simulated_platform.scheduler import Scheduler
    from exec_watchdog.simulated_platform.workload import agent_names, run_workload

    engine = create_engine(args.database_url)
    if "schedule_executions" not in sa.inspect(engine).get_table_names():
        create_platform_tables(engine, slot_metadata)
    names = agent_names(args.agents)
    server = await serve_agents(names, args.agent_secret, host=host, port=port)

    def show(kind: str, started: Any, detail: str) -> None:
        if kind != "started" or started.fault != "none":
            print(f"{kind:>16}  {started.agent}  {started.execution_id}  {started.fault:<11} {detail}", flush=True)

    slots, inflight = open_slot_store(args.redis_url, engine), open_inflight_store(args.redis_url, engine)
    scheduler = Scheduler(engine, slots, server, timeout_seconds=args.timeout, on_event=show, inflight=inflight,
                          hold_seconds=args.hold)
    scheduler.prepare()
    cleanup = _platform_cleanup(args, engine, slots, inflight, server.url_template)
    print(f"simulated platform: {len(names)} agents at {server.url_template} "
          f"(secret {args.agent_secret!r}), database {args.database_url}", flush=True)
    try:
        if cleanup is not None:
            cleanup.start()
        await run_workload(scheduler, workload)
        await scheduler.drain()
    finally:
        if cleanup is not None:
            await cleanup.aclose()
            await cleanup.context.agents.aclose()
        await scheduler.aclose()
        await server.stop()
        engine.dispose()
        print("summary: " + ", ".join(f"{k}={v}" for k, v in sorted(scheduler.counts.items())), flush=True)
    return 0


def _platform_cleanup(args: argparse.Namespace, engine: Any, slots: Any, inflight: Any, url_template: str) -> Any:
    """Trinity's cleanup cycle beside the workload, when asked for; it prints each decision."""
    if not args.platform_cleanup_interval:
        return None
    from exec_watchdog.platform_access.agent_client import AgentClient
    from exec_watchdog.simulated_platform.cleanup_paths.context import Decision
    from exec_watchdog.simulated_platform.platform_cleanup import PlatformCleanup

    def show(d: Decision) -> None:
        verb = "written" if d.written else "would write"
        print(f"{'platform cleanup':>16}  {d.agent}  {d.execution_id}  {d.action} ({verb}): {d.text}", flush=True)

    client = AgentClient(url_template, args.agent_secret, timeout=15.0)  # Trinity's WATCHDOG_HTTP_TIMEOUT
    return PlatformCleanup(engine, slots, inflight, client,
                           interval_seconds=args.platform_cleanup_interval, paths=args.platform_cleanup_paths,
                           shadow=args.platform_cleanup_shadow, on_decision=show)
