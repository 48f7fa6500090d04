"""URLs fit for logs and error messages: credentials are never shown."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis


def redacted_url(url: str) -> str:
    """``scheme://user:***@host/...`` for any URL with a password; the URL unchanged otherwise."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"  # cannot tell where a password would be in it
    if password is None:
        # Not parsed as a URL with credentials (e.g. "redis//:pw@host"): mask what looks like one.
        head, at, tail = url.rpartition("@")
        return f"{head.rpartition(':')[0]}:***@{tail}" if at and ":" in head else url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_redis_url(url: str, flag: str) -> str:
    """A Redis URL redis-py accepts, or a ValueError that names the flag and hides the password."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{flag} {redacted_url(url)!r} must start with redis://, rediss:// or unix://")
    try:
        redis.Redis.from_url(url).close()
    except ValueError as exc:
        raise ValueError(f"{flag} {redacted_url(url)!r}: {exc}") from None
    return url
