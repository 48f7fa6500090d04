"""URLs fit for logs and error messages: credentials are never shown."""

from __future__ import annotations

import redis

from exec_watchdog.common.redaction import redacted_url

__all__ = ["check_redis_url", "redacted_url"]


def check_redis_url(url: str, flag: str) -> str:
    """A Redis URL redis-py accepts, or a ValueError that names the flag and hides the password."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{flag} {redacted_url(url)!r} must start with redis://, rediss:// or unix://")
    try:
        redis.Redis.from_url(url).close()
    except ValueError as exc:
        raise ValueError(f"{flag} {redacted_url(url)!r}: {exc}") from None
    return url
