"""The exporter's configuration, checked once at start: bad settings fail with what to fix."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy as sa

from exec_watchdog.common.flags import ConfigError
from exec_watchdog.common.serving import parse_listen, read_agent_secret
from exec_watchdog.exporter.sharding import Shard, parse_shard
from exec_watchdog.platform_access.agent_client import check_url_template
from exec_watchdog.platform_access.database import redacted
from exec_watchdog.platform_access.urls import check_redis_url

DEFAULT_LISTEN = "127.0.0.1:9463"


@dataclass(frozen=True, slots=True)
class ExporterSettings:
    host: str
    port: int
    database_url: str
    agent_url_template: str
    agent_secret: str = field(repr=False)
    redis_url: str | None = None
    agent_timeout: float = 3.0
    poll_concurrency: int = 50
    database_timeout: float = 5.0
    scrape_timeout: float = 8.0
    inflight_max_age_seconds: float = 10_920.0
    queued_publish_after_seconds: float = 43_200.0  # queued rows get a series once they waited this long
    activity_publish_after_seconds: float = 3_600.0  # started activities get a series once this old
    shard: Shard | None = None  # None: this exporter watches the whole fleet
    advice_window_seconds: float = 7 * 86_400.0  # the rule profile's advice_window (before-window counters)


def _positive_seconds(flag: str, value: object) -> float:
    try:
        seconds = float(str(value))
    except ValueError:
        raise ConfigError(f"{flag} {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{flag} must be a positive number of seconds, got {value!r}")
    return seconds


def _check_database_url(url: str) -> str:
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        raise ConfigError(f"--database-url {redacted(url)!r} is not a database URL: use sqlite:///path/to/trinity.db "
                          "or postgresql+psycopg://user@host:5432/dbname") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = parsed.database
        if path and str(parsed.query.get("uri", "")).lower() == "true" and path.startswith("file:"):
            # An SQLite URI filename, e.g. sqlite:///file:trinity.db?mode=ro&uri=true (read-only).
            path = urlsplit(path).path
        if not path or path == ":memory:":
            raise ConfigError(f"--database-url {redacted(url)!r} names no file: the exporter reads Trinity's database")
        if not Path(path).is_file():
            # Opening a missing SQLite file would silently create an empty database.
            raise ConfigError(f"--database-url: {path!r} does not exist; point it at Trinity's database "
                              "(or create one with `exec-watchdog db init`)")
    elif backend != "postgresql":
        raise ConfigError(f"--database-url {redacted(url)!r}: unsupported database {backend!r}; "
                          "use SQLite or PostgreSQL")
    return url


def _check_redis_url(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return check_redis_url(url, "--redis-url")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def settings_from_args(args: argparse.Namespace) -> ExporterSettings:
    """Turn parsed flags into settings, or raise :class:`ConfigError` naming the flag to fix."""
    host, port = parse_listen(args.listen, DEFAULT_LISTEN)
    try:
        template = check_url_template(args.agent_url_template)
    except ValueError as exc:
        raise ConfigError(f"--agent-url-template: {exc}") from None
    try:
        concurrency = int(str(args.poll_concurrency))
    except ValueError:
        raise ConfigError(f"--poll-concurrency {args.poll_concurrency!r} is not a whole number") from None
    if not 1 <= concurrency <= 1000:
        raise ConfigError(f"--poll-concurrency must be from 1 to 1000, got {concurrency}")
    agent_timeout = _positive_seconds("--agent-timeout", args.agent_timeout)
    scrape_timeout = _positive_seconds("--scrape-timeout", args.scrape_timeout)
    if agent_timeout > scrape_timeout:
        raise ConfigError(f"--agent-timeout ({agent_timeout}s) must not exceed --scrape-timeout ({scrape_timeout}s)")
    return ExporterSettings(
        host=host, port=port,
        database_url=_check_database_url(args.database_url),
        agent_url_template=template,
        agent_secret=read_agent_secret(args.agent_secret, getattr(args, "agent_secret_file", None)),
        redis_url=_check_redis_url(args.redis_url),
        agent_timeout=agent_timeout,
        poll_concurrency=concurrency,
        database_timeout=_positive_seconds("--database-timeout", args.database_timeout),
        scrape_timeout=scrape_timeout,
        inflight_max_age_seconds=_positive_seconds("--inflight-max-age", args.inflight_max_age),
        queued_publish_after_seconds=_positive_seconds("--queued-publish-after", args.queued_publish_after),
        activity_publish_after_seconds=_positive_seconds("--activity-publish-after", args.activity_publish_after),
        shard=_shard(getattr(args, "shard", None)),
        advice_window_seconds=_advice_window(getattr(args, "advice_window", "7d")),
    )


def _advice_window(value: str) -> float:
    from exec_watchdog.alerts.profiles import duration_seconds

    try:
        seconds = duration_seconds(value)
    except ValueError as exc:
        raise ConfigError(f"--advice-window: {exc}") from None
    if seconds <= 0:
        raise ConfigError(f"--advice-window must be positive, got {value!r}")
    return seconds


def _shard(value: str | None) -> Shard | None:
    if not value:
        return None
    try:
        return parse_shard(value)
    except ValueError as exc:
        raise ConfigError(f"--shard {exc}") from None
