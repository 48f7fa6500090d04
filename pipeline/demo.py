"""`exec-watchdog demo`: the simulated platform and the whole watchdog pipeline, live.

The simulated platform (agents running real processes, a scheduler that loses track of some runs)
runs in this process's event loop; the exporter, the remediator, Prometheus and Alertmanager run
as child processes with configurations generated from alerts/. Ctrl-C or ``--duration`` stops
everything; a child that crashes is reported and the demo exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exec_watchdog.alerts.render import PROFILES
from exec_watchdog.common.contract import FAIL_ORPHAN
from exec_watchdog.common.flags import add_flag
from exec_watchdog.common.logs import configure_logging

if TYPE_CHECKING:  # the CLI imports this module for --help: keep the heavy imports lazy
    from exec_watchdog.pipeline.account import Account
    from exec_watchdog.pipeline.platform import Platform, PlatformOptions
    from exec_watchdog.pipeline.stack import Stack
    from exec_watchdog.pipeline.timing import Timing
    from exec_watchdog.simulated_platform.platform_cleanup import PlatformCleanup
    from exec_watchdog.simulated_platform.workload import Workload

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("example: exec-watchdog --log-format console demo --duration 120 --agents 5 --rate 1 "
                     "--faults lose_report=0.2,hang=0.05,late_report=0.1 --restart-every 45")
    add_flag(parser, "--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    add_flag(parser, "--agents", type=int, default=5, help="number of simulated agents")
    add_flag(parser, "--rate", type=float, default=1.0, help="executions started per second")
    add_flag(parser, "--faults",
             default="lose_report=0.15,hang=0.05,late_report=0.1,leak_slot=0.04,expire_slot=0.03,no_session=0.02",
             help="share of executions with each fault: lose_report (orphan), hang (overdue), late_report "
                  "(must never be failed), leak_slot (slot left held), expire_slot (slot past its TTL), "
                  "no_session (a silent launch failure)")
    add_flag(parser, "--run-seconds", default="2,6", help="min,max seconds a normal execution runs")
    add_flag(parser, "--timeout", type=int, default=15, help="timeout_seconds of the simulated schedules")
    add_flag(parser, "--completed-window", type=float, default=5.0,
             help="seconds an agent lists a finished run as recently completed (Trinity: 300)")
    add_flag(parser, "--restart-every", type=float, default=45.0,
             help="restart a random agent every N seconds, forgetting its runs (0: never)")
    add_flag(parser, "--outage-every", type=float, default=60.0,
             help="take a random agent offline for 10 s every N seconds (0: never)")
    add_flag(parser, "--agent-timeout", type=int, default=30,
             help="the agents' own timeout (agent_ownership.execution_timeout_seconds), which Trinity's stale sweep "
                  "counts from (Trinity: 3600); keep it above --timeout and an outage's 10 s, as a platform's is "
                  "above its schedules' timeouts, so only runs of a removed agent go stale")
    add_flag(parser, "--remove-agent-at", type=float, default=40.0,
             help="remove one agent for good after N seconds: its runs end through the stale and no-session "
                  "sweeps (0: never)")
    add_flag(parser, "--partition-every", type=float, default=0.0,
             help="cut the watchdog off the whole fleet for 20 s every N seconds: the fleet guard pages and "
                  "holds every remediation of unreachable agents (0: never)")
    add_flag(parser, "--database-url", help="platform database (default: a new SQLite file in the work directory)")
    add_flag(parser, "--redis-url", help="keep capacity slots and recovery announcements in this Redis")
    add_flag(parser, "--profile", default="fast", choices=PROFILES,
             help="alerts/ profile: fast (seconds) or production (minutes: the first recovery takes a while)")
    add_flag(parser, "--seed", type=int, help="random seed, for a repeatable run")
    add_flag(parser, "--advice-schedules", default="on", choices=["on", "off"],
             help="also run four schedules with distinct runtimes (fast, slow, heavy tail, too tight) so the "
                  "timeout advice and its TooTight/TooLoose warnings have something to show")
    add_flag(parser, "--cleanup-faults-every", type=float, default=60.0,
             help="every N seconds add a skipped row never finalized, a queued row past the backlog age and an "
                  "activity nobody closed, the rows Trinity's cleanup service ends (0: never)")
    add_flag(parser, "--shadow", action="store_true", default=False,
             help="the platform's own cleanup (a model of Trinity's) is in charge and our remediator runs with "
                  "--shadow beside it: it changes nothing, and the account prints each verdict (agree, ours_only, "
                  "theirs_only, different) as the comparison gives it; see exec-watchdog shadow report")
    add_flag(parser, "--shadow-cleanup-interval", type=float, default=30.0,
             help="with --shadow: seconds between the platform cleanup's cycles (Trinity's is 300 s; the demo's is "
                  "shorter so its writes show within a minute); the remediator's --shadow-their-cycle is set to it")
    add_flag(parser, "--summary-every", type=float, default=10.0, help="seconds between summary lines")
    add_flag(parser, "--workdir", help="directory for configurations, data and logs (default: a temporary one, "
                                       "removed on a clean exit)")


def run(args: argparse.Namespace) -> int:
    from exec_watchdog.pipeline.children import MissingBinary
    from exec_watchdog.pipeline.platform import PlatformOptions
    from exec_watchdog.pipeline.stack import check_binaries
    from exec_watchdog.simulated_platform.workload import Workload, parse_mix

    try:
        low, _, high = str(args.run_seconds).partition(",")
        duration = float("inf") if args.duration is None else float(args.duration)
        if duration <= 0:
            raise ValueError("--duration must be positive")
        if args.summary_every <= 0:
            raise ValueError("--summary-every must be positive")
        if not 0 < args.shadow_cleanup_interval <= 3600:
            raise ValueError("--shadow-cleanup-interval must be from more than 0 to 3600 seconds")
        workload = Workload(rate_per_second=args.rate, duration_seconds=duration,
                            run_seconds=(float(low), float(high or low)), mix=parse_mix(args.faults),
                            agent_restart_every=args.restart_every, agent_outage_every=args.outage_every,
                            agent_removal_at=args.remove_agent_at, partition_every=args.partition_every,
                            seed=args.seed)
        options = PlatformOptions(database_url="sqlite://", agents=args.agents, redis_url=args.redis_url,
                                  timeout_seconds=args.timeout, completed_window=args.completed_window,
                                  agent_timeout_seconds=args.agent_timeout,
                                  late_report_seconds=min(2.0, args.completed_window / 2))
    except ValueError as exc:
        print(f"exec-watchdog demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        check_binaries()  # before anything starts
    except MissingBinary as exc:
        print(f"exec-watchdog demo: {exc}", file=sys.stderr)
        return EXIT_FAILED
    # The live account replaces this process's info lines; children log to files in the work dir.
    if args.log_level == "info":
        configure_logging("warning", args.log_format)
    try:
        return asyncio.run(Demo(args, workload, options).main())
    except MissingBinary as exc:
        print(f"exec-watchdog demo: {exc}", file=sys.stderr)
        return EXIT_FAILED


class Demo:
    def __init__(self, args: argparse.Namespace, workload: Workload, options: PlatformOptions) -> None:
        self.args = args
        self.workload = workload
        self.options = options
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[Any]] = []
        self.cleanup: PlatformCleanup | None = None  # with --shadow: the platform's cleanup, in charge

    def _task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.append(task)
        return task

    async def main(self) -> int:
        import dataclasses

        from sqlalchemy.exc import SQLAlchemyError

        from exec_watchdog.pipeline.children import ChildCrashed, NotReady
        from exec_watchdog.pipeline.platform import Platform
        from exec_watchdog.pipeline.shadow import remediator_flags
        from exec_watchdog.pipeline.stack import Stack, StackOptions

        args = self.args
        workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="exec-watchdog-demo-"))
        workdir.mkdir(parents=True, exist_ok=True)
        database_url = args.database_url or f"sqlite:///{workdir / 'trinity.db'}"
        options = dataclasses.replace(self.options, database_url=database_url)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)

        code = EXIT_FAILED
        stack: Stack | None = None
        try:
            platform = await Platform.start(options)
        except (ValueError, OSError, SQLAlchemyError) as exc:
            print(f"exec-watchdog demo: cannot start the simulated platform on {database_url}: {exc}",
                  file=sys.stderr, flush=True)
            if not args.workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            return EXIT_FAILED
        try:
            shadow = remediator_flags(args.shadow_cleanup_interval) if args.shadow else ()
            stack = Stack(StackOptions(database_url, platform.url_template, options.agent_secret,
                                       profile=args.profile, redis_url=args.redis_url, remediator_flags=shadow),
                          workdir / "pipeline")
            stack.start()
            print(f"starting Prometheus, Alertmanager, exporter and remediator (logs in {stack.logs}) ...", flush=True)
            code = await self._run(stack, platform, options, database_url)
        except (ChildCrashed, NotReady) as exc:
            print(f"exec-watchdog demo: {exc}", file=sys.stderr, flush=True)
        finally:
            # The signal handlers stay until the end: a second Ctrl-C must not cut the clean-up short.
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            if self.cleanup is not None:
                await self.cleanup.aclose()
                await self.cleanup.context.agents.aclose()
            if stack is not None:
                await asyncio.to_thread(stack.stop)
            await platform.stop()
            if code == EXIT_OK and not args.workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            elif code != EXIT_OK:
                print(f"configurations, data and logs kept in {workdir}", file=sys.stderr, flush=True)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        return code

    async def _run(self, stack: Stack, platform: Platform, options: PlatformOptions, database_url: str) -> int:
        from exec_watchdog.pipeline.account import Account, listen_recoveries, poll_alerts, poll_slot_removals
        from exec_watchdog.pipeline.timing import Timing
        from exec_watchdog.simulated_platform.workload import run_workload

        ready = self._task(asyncio.to_thread(stack.wait_ready))
        stopped = self._task(self.stop.wait())
        await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            print("stopped before the pipeline was ready", flush=True)
            return EXIT_OK
        ready.result()  # raises ChildCrashed / NotReady

        account = Account(platform.scheduler, shadow=self.args.shadow)
        platform.scheduler.on_execution = account.on_event
        platform.scheduler.on_agent = account.on_agent
        self._print_where(stack, platform, options, database_url, Timing.of(self.args.profile))
        for url in stack.remediator_urls:
            self._task(listen_recoveries(url, stack.token, account.on_recovery))
        self._task(poll_alerts(stack.alertmanager_urls[0], account.on_alerts))
        self._task(poll_slot_removals(stack.remediator_urls[0], stack.token, account.on_decisions))
        self._task(self._summaries(account))
        if self.args.shadow:
            from exec_watchdog.pipeline.shadow import platform_cleanup, poll_verdicts

            self.cleanup = platform_cleanup(platform, self.args.shadow_cleanup_interval, account.on_cleanup)
            self.cleanup.start()  # its start-up sweep now, then a cycle every interval
            self._task(poll_verdicts(platform.engine, account.on_verdicts))
        workload = self._task(run_workload(platform.scheduler, self.workload))
        if self.args.advice_schedules == "on":
            from exec_watchdog.simulated_platform.schedules import DEMO, place, register, run_schedules

            placed = place(DEMO, options.agent_names)
            await asyncio.to_thread(register, platform.engine, placed)
            self._task(run_schedules(platform.scheduler, placed, self.workload.duration_seconds, seed=self.args.seed))
        from exec_watchdog.pipeline.cleanup_faults import inject_cleanup_faults

        self._task(inject_cleanup_faults(platform.scheduler, options.agent_names, self.args.profile,
                                         self.args.cleanup_faults_every, self.workload.duration_seconds,
                                         seed=self.args.seed, past_platform_bounds=self.args.shadow))
        crash = self._task(self._watch_children(stack))
        timer = self._task(asyncio.sleep(self.workload.duration_seconds if self.args.duration else 1e9))
        done, _ = await asyncio.wait({crash, timer, stopped, workload}, return_when=asyncio.FIRST_COMPLETED)
        if crash in done:
            exc = crash.result()
            print(f"\nexec-watchdog demo: a child process crashed: {exc}", file=sys.stderr, flush=True)
            return EXIT_FAILED
        if workload in done and workload.exception() is not None:
            print(f"\nexec-watchdog demo: the simulated platform failed: {workload.exception()!r}",
                  file=sys.stderr, flush=True)
            return EXIT_FAILED
        platform.scheduler.on_execution = lambda kind, started, detail: None  # quiet while stopping
        platform.scheduler.on_agent = lambda what, agent, forgotten: None
        print("\nstopping ...", flush=True)
        account.line("summary", account.summary())
        return EXIT_OK

    async def _watch_children(self, stack: Stack) -> Exception:
        while True:
            crashed = stack.children.crashed()
            if crashed is not None:
                exc: Exception = crashed
                return exc
            await asyncio.sleep(0.5)

    async def _summaries(self, account: Account) -> None:
        while True:
            await asyncio.sleep(self.args.summary_every)
            account.line("summary", account.summary())

    def _print_where(self, stack: Stack, platform: Platform, options: PlatformOptions, database_url: str,
                     timing: Timing) -> None:
        am = stack.alertmanager_urls[0]
        rows = [
            ("simulated agents", f"{platform.url_template}  ({options.agents} agents)"),
            ("database", database_url + (f"  (slots and announcements in {options.redis_url})"
                                         if options.redis_url else "")),
            ("exporter", f"{stack.exporter_url}/metrics"),
            ("Prometheus", f"{stack.prometheus_url}  (rules and alerts: /alerts, scrape targets: /targets)"),
            ("Alertmanager", f"{am}  (pause remediation: amtool --alertmanager.url={am} silence add "
                             "'remediation=~\".+\"' -c pause)"),
            ("remediator", f"{stack.remediator_urls[0]}/#token={stack.token}  (live recoveries page)"),
            ("remediator API", f"{stack.remediator_urls[0]}/metrics, /api/v1/audit (Bearer token above)"),
            *([("platform cleanup", f"a model of Trinity's, in charge: start-up sweep, then a cycle every "
                                    f"{self.args.shadow_cleanup_interval:g} s (Trinity: 300 s); the remediator "
                                    "runs --shadow and changes nothing"),
               ("shadow report", f"exec-watchdog shadow report --database-url {database_url}")]
              if self.args.shadow else []),
            ("logs", str(stack.logs)),
        ]
        print(f"\nexec-watchdog demo, profile {self.args.profile!r}; everything on 127.0.0.1:", flush=True)
        for name, where in rows:
            print(f"  {name:<17} {where}", flush=True)
        print(f"\ndetection floor: {timing.detection(FAIL_ORPHAN):g} s ({timing.describe()}); a lost report is "
              f"noticed once the agent stops listing the run as recently completed ({options.completed_window:g} s)."
              "\nExecutions with a fault are listed below; normal ones are counted in the summary lines. "
              "Ctrl-C stops everything.\n", flush=True)

