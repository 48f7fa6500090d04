"""`exec-watchdog remediator`: the Alertmanager webhook, configured by flags and environment."""

from __future__ import annotations

import argparse
import socket
import sys
import uuid
from typing import TYPE_CHECKING, Any

from exec_watchdog.common.flags import add_flag, read_secret_file
from exec_watchdog.common.serving import bind_listen, parse_listen, read_agent_secret
from exec_watchdog.platform_access import DEFAULT_DATABASE_URL

if TYPE_CHECKING:  # the app is imported only when the command runs: --help stays fast
    from exec_watchdog.remediator.app import Config

DEFAULT_LISTEN = "127.0.0.1:9464"

EPILOG = """\
Alertmanager side (alertmanager.yml):
  receivers:
    - name: remediator
      webhook_configs:
        - url: http://127.0.0.1:9464/api/v1/alerts
          send_resolved: true
          http_config: {authorization: {credentials_file: /etc/exec-watchdog/remediator-token}}

Pause all remediation with one silence:  amtool silence add 'remediation=~".+"' -c "maintenance"
"""


def register(commands: Any) -> None:
    p = commands.add_parser(
        "remediator", help="the Alertmanager webhook that re-verifies and recovers executions",
        description="Receive Alertmanager notifications (payload v4) at POST /api/v1/alerts; for each firing "
                    "alert labelled with a remediation (fail_orphan, terminate_overdue, claim_result, fail_stale, "
                    "fail_no_session) re-verify against the database and the agent, then act exactly once, "
                    "keeping the evidence of every decision. Also serves "
                    "/metrics, /healthz, /readyz, the audit API (/api/v1/audit), each execution's story "
                    "(/api/v1/executions/{id}), the live recoveries page (/) and its WebSocket feed.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flag(p, "--listen", default=DEFAULT_LISTEN, help="IP:PORT (or localhost:PORT, [IPv6]:PORT) to serve on")
    add_flag(p, "--external-url", help="the URL people reach this remediator at, for the story links in "
             "announcements and metrics (default: http:// + --listen, with the host name for a wildcard host)")
    add_flag(p, "--grafana-url", help="Grafana's base URL (e.g. https://grafana.example.com): the live page and "
             "each story link to the exec-watchdog dashboard there")
    add_flag(p, "--database-url", default=DEFAULT_DATABASE_URL, help="SQLAlchemy URL of the platform database")
    add_flag(p, "--agent-url-template", default="http://agent-{agent}:8000", help="agent base URL; {agent} is replaced")
    secret = p.add_mutually_exclusive_group()
    add_flag(secret, "--agent-secret", help="the backend's AGENT_AUTH_SECRET (prefer the file form)")
    add_flag(secret, "--agent-secret-file", help="file holding the backend's AGENT_AUTH_SECRET")
    add_flag(p, "--agent-timeout", type=float, default=5.0, help="seconds per agent request")
    add_flag(p, "--redis-url", help="Redis holding capacity slots (Trinity's layout); SQL table when unset")
    add_flag(p, "--announce-redis-url", help="PUBLISH recovery events to this Redis")
    add_flag(p, "--announce-channel", default="trinity:watchdog", help="Redis channel for recovery events")
    add_flag(p, "--alertmanager-url", action="append", help="Alertmanager to re-check silences against (repeatable)")
    add_flag(p, "--bearer-token-file", help="file holding the token Alertmanager and API clients must present")
    add_flag(p, "--basic-auth-user", help="user for HTTP basic auth (with --basic-auth-password-file)")
    add_flag(p, "--basic-auth-password-file", help="file holding the basic auth password")
    add_flag(p, "--insecure-no-auth", action="store_true", default=False,
             help="accept unauthenticated requests (local experiments only; logged loudly)")
    add_flag(p, "--protect-metrics", action="store_true", default=False, help="require credentials on /metrics too")
    add_flag(p, "--dry-run", action="store_true", default=False,
             help="verify and record 'would recover', change nothing")
    add_flag(p, "--shadow", action="store_true", default=False,
             help="run beside the platform's own cleanup: verify and decide as a dry run, change nothing, keep each "
             "first decision and compare it with the platform's writes (exec-watchdog shadow report); "
             "not with --dry-run")
    add_flag(p, "--shadow-interval", type=float, default=30.0, help="seconds between shadow comparisons")
    add_flag(p, "--shadow-their-cycle", type=float, default=300.0, help="the platform cleanup's cycle in seconds "
             "(Trinity: 300): a decision of ours they have not matched within this plus --shadow-their-margin "
             "is 'ours_only'")
    add_flag(p, "--shadow-their-margin", type=float, default=60.0, help="seconds added to their cycle: their "
             "cycle's own run time and the clocks apart")
    add_flag(p, "--shadow-our-grace", type=float, default=300.0, help="seconds after their write within which a "
             "decision of ours still counts; none by then is 'theirs_only'")
    add_flag(p, "--min-orphan-age", type=float, default=60.0, help="seconds an execution must have run before it "
             "can be failed as an orphan (Trinity's watchdog uses 60)")
    add_flag(p, "--claim-defer", type=float, default=180.0, help="seconds a retained result must have been kept "
             "before it is claimed (Trinity's watchdog waits 180: the run may still report itself)")
    add_flag(p, "--inflight-max-age", type=float, default=10_920.0, help="while in-flight markers cannot be read, "
             "runs younger than this many seconds are held (Trinity: 3600 queue + 7260 + 60)")
    add_flag(p, "--backlog-max-age", type=float, default=86_400.0, help="seconds a queued row must have waited "
             "before expire_backlog fails it (Trinity: 24 h; keep it equal to the rules' backlog_max_age_seconds)")
    add_flag(p, "--activity-stale-after", type=float, default=7_200.0, help="seconds an activity must have been "
             "started before fail_stale_activity fails it (Trinity: 120 minutes; keep it equal to the rules' "
             "activity_stale_seconds)")
    add_flag(p, "--stale-grace", type=int, default=300, help="seconds added to an agent's own timeout to make "
             "its stale window (Trinity's cleanup: 300); match the rules' stale_grace_seconds")
    add_flag(p, "--stale-unowned", type=int, default=7_200, help="stale window in seconds of a run whose agent is "
             "unknown to agent_ownership or soft-deleted (Trinity: 7200); match stale_unowned_seconds")
    add_flag(p, "--no-session-age", type=int, default=60, help="seconds after which a run without a Claude session "
             "is a silent launch failure (Trinity: 60); match no_session_min_age_seconds")
    add_flag(p, "--breaker-max-actions", type=int, default=100, help="remediations allowed per breaker window")
    add_flag(p, "--breaker-window", type=float, default=300.0, help="breaker window in seconds")
    add_flag(p, "--claim-ttl", type=float, default=30.0, help="seconds before a half-done recovery is retried")
    add_flag(p, "--sweep-interval", type=float, default=5.0, help="seconds between sweeps for half-done recoveries")
    add_flag(p, "--replica-id", help="name of this replica in the audit trail (default: host name + random)")
    add_flag(p, "--max-body-bytes", type=int, default=4 * 1024 * 1024, help="largest webhook body accepted")
    add_flag(p, "--max-connections", type=int, default=1000,
             help="open client connections at most (kept below the open-files limit); more are closed at once")
    add_flag(p, "--header-timeout", type=float, default=10.0,
             help="seconds a client has to send a request's headers before it is disconnected")
    p.set_defaults(run=run)


def _read_secret(path: str | None, flag: str) -> str | None:
    return read_secret_file(path, flag) if path else None


def build_config(args: argparse.Namespace) -> Config:
    from exec_watchdog.platform_access.agent_client import check_url_template
    from exec_watchdog.platform_access.slots import require_store_at
    from exec_watchdog.platform_access.urls import check_redis_url
    from exec_watchdog.remediator.app import Config
    from exec_watchdog.remediator.auth import Credentials
    from exec_watchdog.remediator.remediate import SHADOW_AND_DRY_RUN, Settings
    from exec_watchdog.remediator.shadow_verdicts import Settings as ShadowSettings
    from exec_watchdog.remediator.stale import Windows

    secret = read_agent_secret(args.agent_secret, args.agent_secret_file)
    check_url_template(args.agent_url_template)
    require_store_at(args.database_url, args.redis_url)  # fails now on an unparseable URL, too
    for flag, url in (("--redis-url", args.redis_url), ("--announce-redis-url", args.announce_redis_url)):
        if url:
            check_redis_url(url, flag)
    password = _read_secret(args.basic_auth_password_file, "--basic-auth-password-file")
    credentials = Credentials(
        bearer_token=_read_secret(args.bearer_token_file, "--bearer-token-file"),
        basic_user=args.basic_auth_user, basic_password=password,
        allow_unauthenticated=args.insecure_no_auth)
    for name in ("min_orphan_age", "breaker_window", "claim_ttl", "sweep_interval", "agent_timeout",
                 "claim_defer", "inflight_max_age", "header_timeout", "max_connections", "backlog_max_age",
                 "activity_stale_after"):
        if getattr(args, name) <= 0 and name not in ("min_orphan_age", "claim_defer"):
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    if args.shadow and args.dry_run:
        raise ValueError(SHADOW_AND_DRY_RUN)
    comparison = ShadowSettings(args.shadow_interval, args.shadow_their_cycle, args.shadow_their_margin,
                                args.shadow_our_grace)  # ValueError on a bad window
    for name in ("stale_grace", "stale_unowned", "no_session_age"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} cannot be negative")
    external_url = (args.external_url or default_external_url(args.listen)).rstrip("/")
    if not external_url.startswith(("http://", "https://")):
        raise ValueError(f"--external-url {args.external_url!r} must be an http:// or https:// URL")
    grafana_url = (args.grafana_url or "").rstrip("/")
    if grafana_url and not grafana_url.startswith(("http://", "https://")):
        raise ValueError(f"--grafana-url {args.grafana_url!r} must be an http:// or https:// URL")
    replica = args.replica_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
    return Config(
        database_url=args.database_url, agent_url_template=args.agent_url_template, agent_secret=secret,
        credentials=credentials, redis_url=args.redis_url, announce_redis_url=args.announce_redis_url,
        announce_channel=args.announce_channel, alertmanager_urls=tuple(args.alertmanager_url or ()),
        protect_metrics=args.protect_metrics, max_body_bytes=args.max_body_bytes, agent_timeout=args.agent_timeout,
        breaker_max_actions=args.breaker_max_actions, breaker_window_seconds=args.breaker_window,
        sweep_interval_seconds=args.sweep_interval, external_url=external_url, grafana_url=grafana_url,
        settings=Settings(replica=replica, min_orphan_age_seconds=args.min_orphan_age, dry_run=args.dry_run,
                          shadow=args.shadow, shadow_comparison=comparison,
                          claim_ttl_seconds=args.claim_ttl, claim_defer_seconds=args.claim_defer,
                          inflight_max_age_seconds=args.inflight_max_age,
                          backlog_max_age_seconds=args.backlog_max_age,
                          activity_stale_seconds=args.activity_stale_after,
                          sweep_windows=Windows(args.stale_grace, args.stale_unowned, args.no_session_age,
                                                       orphan_grace_seconds=round(args.claim_defer) + 120)),
    )


def default_external_url(listen: str) -> str:
    """Like Alertmanager's default: the listen address, with this host's name for a wildcard host."""
    host, port = parse_listen(listen, DEFAULT_LISTEN)
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(args: argparse.Namespace) -> int:
    import structlog

    from exec_watchdog.remediator.app import create_app
    from exec_watchdog.remediator.server import serve

    try:
        config = build_config(args)
        sock = bind_listen(*parse_listen(args.listen, DEFAULT_LISTEN))
    except ValueError as exc:
        print(f"exec-watchdog remediator: {exc}", file=sys.stderr)
        return 2
    if not config.credentials.configured:
        structlog.get_logger("exec_watchdog.remediator").warning(
            "insecure_no_auth", message="ACCEPTING UNAUTHENTICATED REQUESTS: anyone who can reach "
            f"{args.listen} can fail executions. Use only for local experiments.")
    serve(create_app(config), sock, max_connections=args.max_connections, header_timeout=args.header_timeout)
    return 0
