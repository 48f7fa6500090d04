"""`exec-watchdog shadow report`: how a shadow remediator compares with the platform's own cleanup.

Reads the shadow tables straight from the database (``--database-url``, env
``EXEC_WATCHDOG_DATABASE_URL``, as ``explain``), never writing: totals per verdict (the same counts
as ``exec_watchdog_shadow_verdicts_total`` summed over replicas), lead times where both acted, and
every disagreement (``ours_only``, ``theirs_only``, ``different``) with both sides' story — ours as
``exec-watchdog explain`` tells it, theirs as their row and text. ``--since 7d`` keeps the verdicts
given in the last seven days. Exit status: 0 report printed, 2 error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import datetime, timedelta
from typing import Any

from exec_watchdog.common.contract import SHADOW_VERDICTS
from exec_watchdog.common.flags import ConfigError, add_flag

EXIT_OK, EXIT_ERROR = 0, 2
DISAGREEMENTS = ("ours_only", "theirs_only", "different")


class ReportUnavailable(RuntimeError):
    """The report could not be read: the message says why."""


def register(commands: Any) -> None:
    p = commands.add_parser("shadow", help="shadow mode: compare with the platform's own cleanup",
                            description="Shadow mode's tools (run the remediator with --shadow first).")
    sub = p.add_subparsers(dest="shadow_command", metavar="COMMAND", required=True)
    r = sub.add_parser(
        "report", help="verdicts beside the platform's cleanup, each disagreement with both sides' story",
        description="Print the shadow comparison: totals per verdict (agree, ours_only, theirs_only, different), "
                    "lead times where both acted, and every disagreement with our story (as explain tells it) "
                    "and theirs (their row and text). Reads only. Exit status: 0 printed, 2 error.")
    add_flag(r, "--database-url", help="the database the shadow remediator writes to (SQLAlchemy URL)")
    add_flag(r, "--since", help="only verdicts given in the last DURATION (e.g. 90m, 24h, 7d)")
    r.add_argument("--format", choices=["table", "json"], default="table", help="table for people (default) or json")
    r.set_defaults(run=run)


def parse_since(value: str | None, now: datetime) -> datetime | None:
    from exec_watchdog.alerts.profiles import duration_seconds

    if value is None:
        return None
    try:
        seconds = duration_seconds(value.strip())
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from None
    if seconds <= 0:
        raise ConfigError("--since must be longer than 0s")
    return now - timedelta(seconds=seconds)


def build(url: str, since: datetime | None) -> dict[str, Any]:
    """The report as JSON-ready data."""
    import sqlalchemy as sa

    from exec_watchdog.platform_access.database import create_engine, require_existing
    from exec_watchdog.remediator import shadow_store

    require_existing(url)  # read-only: never create the file it reads
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            missing = [t for t in shadow_store.TABLES if t not in set(sa.inspect(conn).get_table_names())]
            if missing:
                raise ReportUnavailable(f"no shadow tables in {engine.url!r} ({', '.join(missing)} missing): "
                                        "run the remediator with --shadow first (it creates them)")
            counts = shadow_store.counts(conn, since=since)
            verdicts = shadow_store.listed(conn, since)
            disagreements = [_both_sides(conn, v) for v in verdicts if v["verdict"] in DISAGREEMENTS]
    except sa.exc.SQLAlchemyError as exc:
        raise ReportUnavailable(f"cannot read the shadow tables from {engine.url!r}: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:300]}") from None
    finally:
        engine.dispose()
    totals = {verdict: 0 for verdict in SHADOW_VERDICTS}
    for (verdict, _), n in counts.items():
        totals[verdict] = totals.get(verdict, 0) + n
    return {
        "since": None if since is None else since.isoformat(),
        "totals": totals,
        "by_action": [{"verdict": verdict, "action": action, "count": n}
                      for (verdict, action), n in sorted(counts.items())],
        "lead_seconds": _leads(verdicts),
        "disagreements": disagreements,
    }


def _leads(verdicts: list[dict[str, Any]]) -> dict[str, dict[str, float | int]]:
    """Per action where both acted the same way: how much sooner we were (their write - our decision)."""
    by_action: dict[str, list[float]] = {}
    for v in verdicts:
        if v["verdict"] == "agree" and v["lead_seconds"] is not None:
            by_action.setdefault(v["action"], []).append(float(v["lead_seconds"]))
    out: dict[str, dict[str, float | int]] = {}
    for action, leads in sorted(by_action.items()):
        ordered = sorted(leads)
        out[action] = {"count": len(ordered), "median": round(statistics.median(ordered), 3),
                       "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
                       "min": round(ordered[0], 3), "max": round(ordered[-1], 3)}
    return out


def _both_sides(conn: Any, verdict: dict[str, Any]) -> dict[str, Any]:
    from exec_watchdog.remediator import shadow_store, story

    kind, subject_id = verdict["subject_kind"], verdict["subject_id"]
    decision = shadow_store.decision_of(conn, kind, subject_id)
    execution_id = subject_id.split("/", 1)[-1] if kind == "slot" else subject_id
    return {
        "subject": f"{kind}:{subject_id}", "kind": kind, "subject_id": subject_id, "agent": verdict["agent_name"],
        "verdict": verdict["verdict"], "action": verdict["action"], "why": verdict["why"],
        "judged_at": verdict["judged_at"], "lead_seconds": verdict["lead_seconds"],
        "ours": None if decision is None else {
            "action": decision["action"], "remediation": decision["remediation"],
            "decided_at": decision["decided_at"], "late": bool(decision["late"]), "reason": decision["reason"],
            "evidence": json.loads(decision["evidence"]) if decision["evidence"] else None,
            # the story as explain tells it (executions and slots: the story of that run)
            "story": story.load(conn, execution_id) if kind != "activity" else None},
        "theirs": None if verdict["their_action"] is None and verdict["their_late_action"] is None else {
            "action": verdict["their_action"], "status": verdict["their_status"], "error": verdict["their_error"],
            "written_at": verdict["their_written_at"], "later_status": verdict["later_status"],
            "later_seen_at": verdict["later_seen_at"], "late_action": verdict["their_late_action"],
            "late_written_at": verdict["their_late_written_at"]},
    }


def render(report: dict[str, Any]) -> str:
    from exec_watchdog.remediator.explain import render as render_story

    lines = [f"shadow verdicts{' since ' + report['since'] if report['since'] else ''}:"]
    lines += [f"  {verdict:<12} {n:>7}" for verdict, n in report["totals"].items()]
    if report["by_action"]:
        lines += ["", f"  {'verdict':<12} {'action':<26} {'count':>7}"]
        lines += [f"  {r['verdict']:<12} {r['action']:<26} {r['count']:>7}" for r in report["by_action"]]
    if report["lead_seconds"]:
        lines += ["", "lead time where both agreed (their write - our decision, seconds; negative: they were first):",
                  f"  {'action':<26} {'count':>6} {'median':>9} {'p95':>9} {'min':>9} {'max':>9}"]
        lines += [f"  {a:<26} {s['count']:>6} {s['median']:>9} {s['p95']:>9} {s['min']:>9} {s['max']:>9}"
                  for a, s in report["lead_seconds"].items()]
    lines += ["", f"disagreements: {len(report['disagreements'])}"]
    for d in report["disagreements"]:
        lines += ["", f"{d['verdict']} {d['subject']} (agent {d['agent']}, judged {d['judged_at']}): {d['why']}"]
        ours, theirs = d["ours"], d["theirs"]
        if ours is None:
            lines.append("  ours:   no decision")
        else:
            lines.append(f"  ours:   {ours['action']} decided {ours['decided_at']}"
                         f"{' (late: after their write)' if ours['late'] else ''}: {ours['reason']}")
            if ours["story"]:
                lines += [f"          {line}" for line in render_story(ours["story"]).splitlines()]
        if theirs is None:
            lines.append("  theirs: no cleanup write")
        else:
            if theirs["action"]:
                lines.append(f"  theirs: {theirs['action']} written {theirs['written_at']}, row {theirs['status']}: "
                             f"{theirs['error'] or '-'}")
            if theirs["later_status"]:
                lines.append(f"          later the row became {theirs['later_status']} "
                             f"(seen {theirs['later_seen_at']}): the run reported after their cleanup")
            if theirs["late_action"]:
                lines.append(f"          they did {theirs['late_action']} at {theirs['late_written_at']}, "
                             "after their window")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from exec_watchdog.platform_access.timestamps import utcnow

    try:
        if not args.database_url:
            raise ConfigError("say where the shadow tables are: --database-url (or EXEC_WATCHDOG_DATABASE_URL)")
        report = build(args.database_url, parse_since(args.since, utcnow()))
    except (ConfigError, ReportUnavailable, ValueError) as exc:
        print(f"exec-watchdog shadow report: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(report, indent=2, default=str) if args.format == "json" else render(report))
    return EXIT_OK
