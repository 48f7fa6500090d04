"""Side by side: exec-watchdog and Trinity's own cleanup cycle on the same faults, one run.

Two rounds, each on a fresh simulated platform with the real pipeline (exporter, Prometheus,
Alertmanager, remediator, one alerts/ profile) and the simulated platform's model of Trinity's
cleanup service (``simulated_platform/platform_cleanup.py``, its start-up sweep, then a cycle every
``--platform-interval`` seconds, Trinity's 300 by default):

- ``ours``: our remediator in charge, Trinity's cleanup in shadow (it records what it would do,
  and finds left whatever we had not ended by its cycle);
- ``theirs``: Trinity's cleanup in charge, our remediator in shadow (``--shadow`` when the
  remediator has it, else ``--dry-run``: the same decisions, recorded in our audit table, nothing
  changed); our side is then measured by its decision time.

Each round injects the same faults (same seed): orphans (runs whose completion report is lost)
and overdue runs (hung past their timeout), started over ``--spread`` seconds right after the
platform's start-up sweep, and waits one platform cycle past the last fault. Printed per side:
time from the fault to the recovered row (or the would-be recovery), median / p95 / max, and the
ratio of our p95 to theirs. The goal (issue 23): our p95 <= 0.2 x theirs with the production profile
against Trinity's 300 s cycle.

What the default measures: one alignment of Trinity's cycle with the faults (they start right
after its start-up sweep, so each waits for the next cycle at 300 s); the figure Trinity's cycle
gives over every alignment is printed beside it (as bench_recovery.py computes it). Each round takes
about ``--spread`` + one platform interval + a minute: ~12 minutes with the defaults;
``--platform-interval 60`` runs in ~5 minutes and measures a faster Trinity than the real one.

    .venv/bin/python bench/bench_side_by_side.py --profile production
    .venv/bin/python bench/bench_side_by_side.py --profile production --platform-interval 60 --rounds theirs
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bench_recovery import DEFAULTS, inject, percentile, recovered_rows, started_at, stats
from exec_watchdog.common.contract import FAIL_ORPHAN, TERMINATE_OVERDUE
from exec_watchdog.common.logs import configure_logging
from exec_watchdog.pipeline.platform import Platform, PlatformOptions
from exec_watchdog.pipeline.stack import Stack, StackOptions
from exec_watchdog.pipeline.timing import TRINITY_MIN_AGE_SECONDS, Timing
from exec_watchdog.platform_access.agent_client import AgentClient
from exec_watchdog.platform_access.inflight import open_inflight_store
from exec_watchdog.platform_access.timestamps import parse_utc
from exec_watchdog.remediator.audit import decisions
from exec_watchdog.simulated_platform.platform_cleanup import PlatformCleanup

GOAL_RATIO = 0.2  # our p95 <= 0.2 x theirs (issue 23)
EXPECTED = {"orphan": FAIL_ORPHAN, "overdue": TERMINATE_OVERDUE}


@dataclass
class Side:
    """One side's times from fault to (would-be) recovery, by kind, and how many it never reached."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {"orphan": [], "overdue": []})
    missing: int = 0
    other_action: int = 0

    def all(self) -> list[float]:
        return [v for values in self.latencies.values() for v in values]


@dataclass
class Round:
    name: str
    ours: Side
    theirs: Side
    eligible: list[tuple[str, float]]  # (kind, seconds from fault until Trinity may act)
    seconds: float


def our_shadow_flag() -> str:
    """``--shadow`` once the remediator has it (issue 23), else ``--dry-run`` (the same decisions)."""
    shown = subprocess.run([sys.executable, "-m", "exec_watchdog", "remediator", "--help"],
                           capture_output=True, text=True, check=False).stdout
    return "--shadow" if "--shadow" in shown else "--dry-run"


def first_decisions(engine: sa.Engine, ids: list[str]) -> dict[str, tuple[str, float]]:
    """Our first decision that took (or would take) the action, per execution: (remediation, epoch)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(decisions.c.execution_id, decisions.c.remediation, decisions.c.decided_at)
                            .where(decisions.c.execution_id.in_(ids),
                                   decisions.c.outcome.in_(("recovered", "would_recover")))
                            .order_by(decisions.c.id)).all()
    first: dict[str, tuple[str, float]] = {}
    for execution_id, remediation, decided_at in rows:
        first.setdefault(execution_id, (remediation, parse_utc(decided_at).timestamp()))
    return first


async def run_round(name: str, args: argparse.Namespace, flag: str) -> Round:
    ours_in_charge = name == "ours"
    workdir = Path(tempfile.mkdtemp(prefix=f"exec-watchdog-side-{name}-"))
    database_url = f"sqlite:///{workdir / 'trinity.db'}"
    options = PlatformOptions(database_url=database_url, agents=args.agents, redis_url=args.redis_url,
                              timeout_seconds=args.timeout, completed_window=args.completed_window,
                              late_report_seconds=args.completed_window / 2)
    platform = await Platform.start(options)
    stack = Stack(StackOptions(database_url, platform.url_template, options.agent_secret, profile=args.profile,
                               redis_url=args.redis_url, remediator_flags=() if ours_in_charge else (flag,)),
                  workdir / "stack")
    client = AgentClient(platform.url_template, options.agent_secret, timeout=15.0)  # Trinity's watchdog timeout
    cleanup = PlatformCleanup(platform.engine, platform.slots, open_inflight_store(args.redis_url, platform.engine),
                              client, interval_seconds=args.platform_interval, shadow=ours_in_charge)
    begin = time.monotonic()
    try:
        stack.start()
        await asyncio.to_thread(stack.wait_ready)
        await cleanup.run_cycle(startup=True)  # its start-up sweep; the faults start right after it
        cleanup.start(sweep_now=False)
        who = ("ours in charge, theirs in shadow" if ours_in_charge
               else f"theirs in charge, ours in shadow ({flag})")
        print(f"[{name}] {who}: injecting {args.orphans} orphans and {args.overdue} overdue runs over "
              f"{args.spread:g} s; Trinity's cycle every {args.platform_interval:g} s", flush=True)
        injected = await inject(platform, args.orphans, args.overdue, options.agent_names, args.spread,
                                random.Random(args.seed), args.orphan_run)
        ids = [e for e, _ in injected]
        # Every fault is eligible for Trinity by the end of the spread + the timeout; its next cycle
        # after that is the last one that can matter.
        wait_cycles = 1 + int((args.spread + args.timeout + TRINITY_MIN_AGE_SECONDS) // args.platform_interval) + 1
        deadline = time.monotonic() + wait_cycles * args.platform_interval + 120
        while cleanup.cycles < wait_cycles or (ours_in_charge and len(recovered_rows(platform.engine, ids)) < len(ids)):
            stack.children.check()
            if time.monotonic() > deadline:
                print(f"[{name}] deadline reached before every side had its chance", file=sys.stderr)
                break
            await asyncio.sleep(0.5)
        starts = started_at(platform.engine, ids)
        ours_first = first_decisions(platform.engine, ids)
    finally:
        await cleanup.aclose()
        await client.aclose()
        stack.stop()
        await platform.stop()
    ours, theirs = Side(), Side()
    eligible = []
    for execution_id, kind in injected:
        if kind == "orphan":
            fault = platform.scheduler.fault_at[execution_id].timestamp()
            ran = fault - starts[execution_id]
            eligible.append((kind, max(options.completed_window, TRINITY_MIN_AGE_SECONDS - ran)))
        else:
            fault = starts[execution_id] + options.timeout_seconds
            eligible.append((kind, 0.0))
        mine = ours_first.get(execution_id)
        if mine is None:
            ours.missing += 1
        else:
            ours.other_action += mine[0] != EXPECTED[kind]
            ours.latencies[kind].append(mine[1] - fault)
        decision = cleanup.context.ledger.first(execution_id)
        if decision is None:
            theirs.missing += 1
        else:
            theirs.other_action += decision.action != EXPECTED[kind]
            theirs.latencies[kind].append(decision.at.timestamp() - fault)
    shutil.rmtree(workdir, ignore_errors=True)
    return Round(name, ours, theirs, eligible, time.monotonic() - begin)


def show_side(label: str, side: Side, total: int) -> None:
    for kind in ("orphan", "overdue"):
        values = side.latencies[kind]
        print(f"  {label:<34} {kind:<8} ({len(values):>2}): {stats(values)}")
    if side.missing or side.other_action:
        print(f"  {'':<34} not reached (ended by the other side first, or never): {side.missing} of {total}; "
              f"another action than expected: {side.other_action}")


def report(rounds: list[Round], args: argparse.Namespace, flag: str) -> int:
    timing = Timing.of(args.profile)
    print(f"\n{args.profile} profile: {timing.describe()}")
    print(f"Trinity's cleanup (simulated): start-up sweep, then a cycle every {args.platform_interval:g} s; "
          f"orphan minimum age {TRINITY_MIN_AGE_SECONDS:g} s; agents' recently-completed window "
          f"{args.completed_window:g} s for both sides")
    print("\nfrom the fault to the recovered row (in charge) or to the would-be recovery (in shadow):")
    ours_live: list[float] = []
    theirs_live: list[float] = []
    for r in rounds:
        total = sum(len(v) for v in r.ours.latencies.values()) + r.ours.missing
        print(f"round '{r.name}' ({r.seconds / 60:.1f} min):")
        if r.name == "ours":
            show_side("ours (in charge, row recovered)", r.ours, total)
            show_side("theirs (shadow, would act)", r.theirs, total)
            ours_live = r.ours.all()
        else:
            show_side("theirs (in charge, row written)", r.theirs, total)
            show_side(f"ours (shadow {flag}, decided)", r.ours, total)
            theirs_live = r.theirs.all()
            if not ours_live:
                ours_live = r.ours.all()
    eligible = [e for r in rounds for e in r.eligible]
    every_phase = [e + phase for _, e in eligible for phase in range(int(args.platform_interval))]
    print(f"\nTrinity's {args.platform_interval:g} s cycle over every alignment with the faults (computed as in "
          f"bench_recovery.py): {stats(every_phase)}")
    if args.platform_interval != 300:
        print("  Trinity's real 300 s cycle over every alignment: "
              f"{stats(trinity_latencies_from(eligible))}")
    if not ours_live or not theirs_live:
        print("\nratio: needs both rounds (--rounds both) or a side that acted")
        return 0
    ours_p95, theirs_p95 = percentile(ours_live, 0.95), percentile(theirs_live, 0.95)
    ratio = ours_p95 / theirs_p95
    ok = ratio <= GOAL_RATIO
    print(f"\nour p95 {ours_p95:.1f} s / their p95 {theirs_p95:.1f} s = {ratio:.2f} "
          f"(median {statistics.median(ours_live):.1f} s vs {statistics.median(theirs_live):.1f} s); "
          f"goal <= {GOAL_RATIO:g}: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


def trinity_latencies_from(eligible: list[tuple[str, float]]) -> list[float]:
    return [e + phase for _, e in eligible for phase in range(300)]


async def main_async(args: argparse.Namespace) -> int:
    flag = our_shadow_flag()
    names = ["ours", "theirs"] if args.rounds == "both" else [args.rounds]
    rounds = [await run_round(name, args, flag) for name in names]
    return report(rounds, args, flag)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(DEFAULTS), default="production",
                        help="the alerts/ profile our pipeline runs with (default production)")
    parser.add_argument("--platform-interval", type=float, default=300.0,
                        help="Trinity's cleanup cycle in seconds (default 300, Trinity's own); shorter runs faster "
                             "and measures a faster Trinity")
    parser.add_argument("--rounds", choices=("both", "ours", "theirs"), default="both",
                        help="ours: ours in charge, theirs in shadow; theirs: the other way round (default both)")
    parser.add_argument("--orphans", type=int, default=20)
    parser.add_argument("--overdue", type=int, default=10)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--spread", type=float, help="seconds over which the runs are started (default: the profile's)")
    parser.add_argument("--timeout", type=int, help="the schedules' timeout (default: the profile's)")
    parser.add_argument("--completed-window", type=float, default=2.0,
                        help="seconds an agent lists a finished run as recently completed")
    parser.add_argument("--redis-url", help="capacity slots, in-flight markers and announcements in this Redis")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    configure_logging("warning", "console")
    if args.orphans < 0 or args.overdue < 0 or args.orphans + args.overdue == 0:
        parser.error("inject at least one execution")
    if not 5 <= args.platform_interval <= 3600:
        parser.error("--platform-interval must be from 5 to 3600 seconds")
    args.orphan_run, timeout, spread = DEFAULTS[args.profile]
    args.timeout = timeout if args.timeout is None else args.timeout
    args.spread = spread if args.spread is None else args.spread
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
