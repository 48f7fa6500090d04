"""`exec-watchdog advise`: the advised timeout per schedule, straight from the database.

For teams with no Prometheus history yet: the same runs (platform_access.run_history), the same
buckets (exporter.history) and the same formula (alerts.advice) as the recording rules, over the
profile's ``advice_window``. It only reads; ``--sql`` prints the UPDATE statements for an operator
to review and run, it never runs them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from exec_watchdog.alerts import advice
from exec_watchdog.alerts.profiles import PROFILES, ProfileError, load_profile
from exec_watchdog.common.flags import add_flag
from exec_watchdog.exporter.history import DURATION_BUCKETS
from exec_watchdog.platform_access import DEFAULT_DATABASE_URL
from exec_watchdog.platform_access.database import require_existing
from exec_watchdog.platform_access.run_history import (
    CompletedRun,
    completed_runs,
    completed_time,
    deleted_agents,
    schedule_timeouts,
)
from exec_watchdog.platform_access.schema import MANUAL_SCHEDULE
from exec_watchdog.platform_access.timestamps import utcnow


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "advise", help="advise a timeout per schedule from its completed runs (reads only)",
        description="Per schedule: successful runs in the window, their p50/p95/p99, the current effective "
                    "timeout and the advised one (p99 x 1.5 rounded up to a minute, within [60 s, 1 day], never "
                    "from fewer than the profile's advice_min_runs runs). The same advice as the Prometheus "
                    "recording rules. Never writes to the database.")
    add_flag(parser, "--database-url", default=DEFAULT_DATABASE_URL, help="SQLAlchemy URL of Trinity's database")
    add_flag(parser, "--profile", default="production", choices=PROFILES,
             help="rule profile whose advice_window and advice_min_runs to use")
    add_flag(parser, "--agent", help="only this agent's schedules")
    add_flag(parser, "--schedule", help="only this schedule id")
    add_flag(parser, "--format", default="table", choices=["table", "json"], help="output format")
    parser.add_argument("--sql", action="store_true",
                        help="print UPDATE agent_schedules statements for the advised timeouts that differ "
                             "from the current ones (to review; nothing is executed)")
    parser.set_defaults(run=run)


def collect(conn: sa.Connection, *, window: timedelta, min_runs: int, now: datetime,
            agent: str | None = None, schedule: str | None = None) -> list[advice.Advice]:
    """The advice for every schedule with runs in the window or a configured timeout, sorted (soft-deleted
    agents' schedules left out)."""
    since = now - window
    histograms: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * len(DURATION_BUCKETS))
    for run in completed_runs(conn, completed_since=since):  # a superset: times compared here
        if not isinstance(run, CompletedRun) or run.status != "success":
            continue
        at = completed_time(run)
        if at is None or not since < at <= now:  # the rules' window: (now - window, now]
            continue
        counts = histograms[(run.agent, run.schedule_id)]
        counts[_bucket(run.duration_seconds)] += 1
    timeouts = schedule_timeouts(conn)
    deleted = deleted_agents(conn)  # soft-deleted agents are not the watchdog's business
    # Manual runs use the agent's timeout: listed only for agents that have some.
    keys = {k for k in histograms if k[0] not in deleted} | {k for k in timeouts if k[1] != MANUAL_SCHEDULE}
    out = []
    for key in sorted(keys):
        if (agent is not None and key[0] != agent) or (schedule is not None and key[1] != schedule):
            continue
        cumulative = _cumulative(histograms.get(key, [0] * len(DURATION_BUCKETS)))
        out.append(advice.advise(key[0], key[1], DURATION_BUCKETS, cumulative, timeouts.get(key), min_runs))
    return out


def _bucket(seconds: float) -> int:
    return next(i for i, bound in enumerate(DURATION_BUCKETS) if seconds <= bound)


def _cumulative(counts: list[int]) -> list[int]:
    total, out = 0, []
    for c in counts:
        total += c
        out.append(total)
    return out


def run(args: argparse.Namespace) -> int:
    from exec_watchdog.exporter.app import open_engine  # read-only sessions on PostgreSQL, with a statement timeout

    try:
        profile = load_profile(args.profile)
        require_existing(args.database_url)  # read-only: never create the file it reads
        engine = open_engine(args.database_url, timeout=60.0)
        with engine.connect() as conn:
            advices = collect(conn, window=timedelta(seconds=profile.seconds("advice_window")),
                              min_runs=profile.advice_min_runs, now=utcnow(), agent=args.agent,
                              schedule=args.schedule)
        engine.dispose()
    except (ValueError, ProfileError, sa.exc.SQLAlchemyError) as exc:
        print(f"exec-watchdog advise: {_first_line(exc)}", file=sys.stderr)
        return 2
    if args.sql:
        print(sql_statements(advices, sa.make_url(args.database_url).get_backend_name()), end="")
    elif args.format == "json":
        print(json.dumps([_as_dict(a) for a in advices], indent=2))
    else:
        print(table(advices, profile.advice_window, profile.advice_min_runs), end="")
    return 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]


def _seconds(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 1)


def _as_dict(a: advice.Advice) -> dict[str, object]:
    return {
        "agent": a.agent, "schedule_id": a.schedule_id, "runs": a.runs,
        **{f"p{round(q * 100)}": _seconds(a.quantiles.get(q)) for q in advice.QUANTILES},
        "current_timeout": a.current_timeout, "advised": a.advised, "why": a.why,
    }


def table(advices: list[advice.Advice], window: str, min_runs: int) -> str:
    head = ["schedule", "agent", "runs", "p50", "p95", "p99", "current", "advised", "why"]
    rows = [head]
    for a in advices:
        d = _as_dict(a)
        rows.append([a.schedule_id, a.agent, str(a.runs),
                     *(_fmt(d[f"p{round(q * 100)}"]) for q in advice.QUANTILES),  # type: ignore[arg-type]
                     _fmt(a.current_timeout), _fmt(a.advised), a.why])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows]
    footer = (f"successful runs completed in the last {window}; advice needs {min_runs} of them "
              f"(seconds; p50/p95/p99 estimated from the exporter's buckets, as Prometheus does)")
    return "\n".join([*lines, "", footer]) + "\n"


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _quote(text: str, dialect: str) -> str:
    """A string literal for ``dialect``.

    PostgreSQL: an escape string (``E'...'``, quotes and backslashes doubled), which reads the
    same whether ``standard_conforming_strings`` is on or off; in a plain literal a backslash
    escapes the closing quote when it is off (legacy servers), and the id's text would run as SQL.
    SQLite has no escape strings and no backslash escapes: quotes doubled.
    """
    if dialect == "postgresql":
        return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
    return "'" + text.replace("'", "''") + "'"


def _comment(text: str) -> str:
    """One SQL comment line: a line break in an id must not end the comment and start a statement."""
    return "-- " + text.replace("\r", " ").replace("\n", " ") + "\n"


def sql_statements(advices: list[advice.Advice], dialect: str = "sqlite") -> str:
    """UPDATE statements for every advised timeout that differs from the current one, for ``dialect``
    (``sqlite`` or ``postgresql``, the database the advice was read from)."""
    out = ["-- exec-watchdog advise: review before running; nothing here has been executed.\n"]
    if dialect == "postgresql":  # belt and braces: the E'' literals below are safe either way
        out.append("SET standard_conforming_strings = on;\n")
    for a in advices:
        if a.advised is None or a.advised == a.current_timeout:
            continue
        note = _comment(f"{a.agent} / {a.schedule_id}: {a.runs} runs, current {a.current_timeout}s -> "
                        f"{a.advised}s: {a.why}")
        if a.schedule_id == MANUAL_SCHEDULE:
            out.append(note + "-- manual runs use the agent's timeout (agent_ownership.execution_timeout_seconds); "
                              "not changed here\n")
            continue
        # Printed for review, never executed; values are quoted as SQL string literals.
        out.append(note + f"UPDATE agent_schedules SET timeout_seconds = {a.advised} "  # noqa: S608
                          f"WHERE id = {_quote(a.schedule_id, dialect)} AND agent_name = {_quote(a.agent, dialect)};\n")
    return "".join(out)
