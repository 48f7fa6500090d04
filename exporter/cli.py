"""`exec-watchdog exporter`: serve /metrics for Prometheus."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from typing import Any

from exec_watchdog.common.flags import ConfigError, add_flag
from exec_watchdog.common.serving import bind_listen
from exec_watchdog.exporter.settings import DEFAULT_LISTEN, ExporterSettings, settings_from_args
from exec_watchdog.platform_access import DEFAULT_DATABASE_URL
from exec_watchdog.platform_access.agent_client import DEFAULT_URL_TEMPLATE


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "exporter", help="publish running executions and agent presence on /metrics",
        description="Serve /metrics: per running execution its runtime, effective timeout and whether its "
                    "agent still knows it; per agent reachability, registry counts and capacity slots. "
                    "Every scrape reads the database once and polls the agents concurrently.")
    add_flag(parser, "--listen", default=DEFAULT_LISTEN,
             help="IP:PORT (or localhost:PORT, [IPv6]:PORT) to serve /metrics and /healthz on")
    add_flag(parser, "--database-url", default=DEFAULT_DATABASE_URL, help="SQLAlchemy URL of Trinity's database")
    add_flag(parser, "--agent-url-template", default=DEFAULT_URL_TEMPLATE,
             help="base URL of an agent server, with {agent} where the agent name goes")
    secret = parser.add_mutually_exclusive_group()
    add_flag(secret, "--agent-secret", help="the backend's AGENT_AUTH_SECRET (prefer the file form)")  # type: ignore[arg-type]
    add_flag(secret, "--agent-secret-file", help="file holding the backend's AGENT_AUTH_SECRET")  # type: ignore[arg-type]
    add_flag(parser, "--redis-url", help="Redis holding the capacity slots; without it, the agent_slots table")
    add_flag(parser, "--agent-timeout", default="3", help="seconds one agent may take to answer")
    add_flag(parser, "--inflight-max-age", default="10920",
             help="while in-flight markers cannot be read, runs younger than this many seconds count as in "
                  "flight (Trinity: 3600 queue + 7260 + 60)")
    add_flag(parser, "--queued-publish-after", default="43200",
             help="seconds a queued row must have waited before it is published (keep it below the rules' "
                  "backlog_max_age_seconds; Trinity expires the backlog at 24 h)")
    add_flag(parser, "--activity-publish-after", default="3600",
             help="seconds an activity must have been started before it is published (keep it below the rules' "
                  "activity_stale_seconds; Trinity fails started activities at 120 minutes)")
    add_flag(parser, "--poll-concurrency", default="50", help="agents polled at the same time")
    add_flag(parser, "--database-timeout", default="5", help="seconds the database read may take")
    add_flag(parser, "--scrape-timeout", default="8",
             help="seconds one whole scrape may take; keep it below Prometheus' scrape_timeout")
    add_flag(parser, "--advice-window", default="7d",
             help="the rule profile's advice_window (Prometheus duration): runs completed before now minus this are "
                  "also counted apart, so the timeout advice rules judge only the window from the first scrape")
    add_flag(parser, "--shard", help="K/N: watch only shard K (0..N-1) of N, by a stable hash of the agent name; "
                                     "K may be a StatefulSet pod name ending in its ordinal (POD_NAME/4)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from exec_watchdog.platform_access.slots import require_store_at

    try:
        settings = settings_from_args(args)
        require_store_at(settings.database_url, settings.redis_url)
        sock = bind_listen(settings.host, settings.port)
    except ConfigError as exc:
        print(f"exec-watchdog exporter: {exc}", file=sys.stderr)
        return 2
    serve(settings, sock)
    return 0


def serve(settings: ExporterSettings, sock: socket.socket) -> None:
    import structlog

    from exec_watchdog.common.serving import serve as serve_app
    from exec_watchdog.exporter.app import create_app

    # httpx logs every request at INFO: a thousand lines per scrape. Failures are logged by us.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    structlog.get_logger("exporter").info(
        "exporter starting", listen=f"{settings.host}:{settings.port}", agent_url_template=settings.agent_url_template,
        poll_concurrency=settings.poll_concurrency, agent_timeout=settings.agent_timeout,
        shard=str(settings.shard) if settings.shard else "all")
    serve_app(create_app(settings), sock, timeout_graceful_shutdown=5)
