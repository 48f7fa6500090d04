"""`exec-watchdog db init`: create the embedded default database (never alters an existing one)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from exec_watchdog.common.flags import add_flag
from exec_watchdog.platform_access import DEFAULT_DATABASE_URL


def register(commands: Any) -> None:
    db = commands.add_parser("db", help="create the embedded default database",
                             description="Database set-up for the embedded default (SQLite).")
    sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    init = sub.add_parser(
        "init", help="create Trinity's tables (the columns exec-watchdog uses) in a new database",
        description="Create schedule_executions, agent_schedules, agent_ownership, agent_slots and "
                    "execution_inflight in an empty database. Refuses, changing nothing, if any exists already.")
    add_flag(init, "--database-url", default=DEFAULT_DATABASE_URL, help="SQLAlchemy URL of the new database")
    init.set_defaults(run=run_init)


def run_init(args: argparse.Namespace) -> int:
    from exec_watchdog.platform_access.database import DatabaseExists, create_engine, create_platform_tables
    from exec_watchdog.platform_access.slots import slot_metadata

    try:
        engine = create_engine(args.database_url)
        create_platform_tables(engine, slot_metadata)
    except (ValueError, DatabaseExists) as exc:
        print(f"exec-watchdog db init: {exc}", file=sys.stderr)
        return 2
    print(f"created the platform tables in {engine.url.render_as_string(hide_password=True)}")
    engine.dispose()
    return 0
