"""`exec-watchdog explain EXECUTION_ID`: an execution's story as a timeline for the engineer on call.

Reads the story straight from the database (``--database-url``) or from a running remediator
(``--remediator-url`` with its bearer token); ``--format json`` prints what
``GET /api/v1/executions/{id}`` answers.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from exec_watchdog.common.flags import ConfigError, add_flag, read_secret_file

EXIT_FOUND, EXIT_UNKNOWN, EXIT_ERROR = 0, 1, 2


class StoryUnavailable(RuntimeError):
    """The story could not be read: the message says from where and why."""


def register(commands: Any) -> None:
    p = commands.add_parser(
        "explain", help="print one execution's story: every notification, decision with evidence, action",
        description="Print an execution's whole story in time order: the alert, every notification that "
                    "reached a remediator, every decision with the facts behind it (the row as read, the "
                    "agent's answer, the silence re-check, the guarded update, timings), the recovery and its "
                    "announcement. Exit status: 0 found, 1 nothing known about the execution, 2 error.")
    p.add_argument("execution_id", metavar="EXECUTION_ID")
    add_flag(p, "--remediator-url", help="a running remediator to ask (GET /api/v1/executions/{id})")
    add_flag(p, "--bearer-token-file", help="file holding the remediator's bearer token (with --remediator-url)")
    add_flag(p, "--database-url", help="read the story from the database instead (SQLAlchemy URL)")
    add_flag(p, "--external-url", default="", help="the remediator's address, for story links (with --database-url)")
    p.add_argument("--format", choices=["text", "json"], default="text", help="text for people (default) or json")
    p.set_defaults(run=run)


def fetch_from_remediator(url: str, token: str | None, execution_id: str) -> dict[str, Any] | None:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    target = f"{url.rstrip('/')}/api/v1/executions/{execution_id}"
    try:
        response = httpx.get(target, headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        raise StoryUnavailable(f"cannot reach the remediator at {url}: {exc}") from None
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise StoryUnavailable(f"{target} answered {response.status_code}: {response.text[:300]}")
    story: dict[str, Any] = response.json()
    return story


def read_from_database(url: str, execution_id: str, external_url: str) -> dict[str, Any] | None:
    import sqlalchemy as sa

    from exec_watchdog.platform_access.database import create_engine, require_existing
    from exec_watchdog.remediator import story

    require_existing(url)  # read-only: never create the file it reads (MissingDatabase is a ValueError)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return story.load(conn, execution_id, external_url)
    except sa.exc.SQLAlchemyError as exc:
        raise StoryUnavailable(f"cannot read the story from {engine.url!r}: {type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:300]}") from None
    finally:
        engine.dispose()


def render(story: dict[str, Any]) -> str:
    """The story as a timeline: when (and how long after the first event), what, and the facts."""
    lines = [f"execution {story['execution_id']}"]
    row = story.get("execution")
    if row:
        lines.append(f"  now: {row['status']} on agent {row['agent']} (schedule {row['schedule_id']}), "
                     f"started {row['started_at']}, completed {row['completed_at'] or '-'}")
        if row.get("error"):
            lines.append(f"  error: {row['error']}")
    else:
        lines.append("  not in the platform's database")
    if story.get("story_url"):
        lines.append(f"  story: {story['story_url']}")
    if story.get("decisions_left_out"):
        lines.append(f"  ({story['decisions_left_out']} older decisions left out)")
    timeline = story.get("timeline", [])
    first = _when(timeline[0]["at"]) if timeline else None
    lines += ["", "timeline:"]
    for event in timeline:
        at = _when(event["at"])
        offset = f"+{(at - first).total_seconds():.3f}s" if at and first else ""
        lines.append(f"  {event['at']:<27} {offset:>12}  {event['kind']:<13} {event['summary']}")
        lines += [f"  {'':<27} {'':>12}  {'':<13}   - {fact}" for fact in event.get("facts", [])]
    return "\n".join(lines)


def _when(value: str) -> datetime | None:
    from exec_watchdog.platform_access.timestamps import BadTimestamp, parse_utc

    try:
        return parse_utc(value)
    except BadTimestamp:
        return None


def run(args: argparse.Namespace) -> int:
    from exec_watchdog.platform_access.names import InvalidIdentifier, check_execution_id

    try:
        execution_id = check_execution_id(args.execution_id)
        if args.remediator_url:
            token = read_secret_file(args.bearer_token_file, "--bearer-token-file") if args.bearer_token_file else None
            story = fetch_from_remediator(args.remediator_url, token, execution_id)
        elif args.database_url:
            story = read_from_database(args.database_url, execution_id, args.external_url)
        else:
            raise ConfigError("say where the story is: --remediator-url (with --bearer-token-file) or --database-url")
    except (InvalidIdentifier, ConfigError, StoryUnavailable, ValueError) as exc:
        print(f"exec-watchdog explain: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if story is None:
        print(f"exec-watchdog explain: nothing is known about execution {execution_id!r}", file=sys.stderr)
        return EXIT_UNKNOWN
    print(json.dumps(story, indent=2) if args.format == "json" else render(story))
    return EXIT_FOUND
