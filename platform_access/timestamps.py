"""Trinity's timestamps: TEXT `%Y-%m-%dT%H:%M:%S.%fZ`, with older rows naive and meaning UTC."""

from __future__ import annotations

from datetime import UTC, datetime


class BadTimestamp(ValueError):
    """A stored timestamp that cannot be read; the message names the value."""


def parse_utc(value: object) -> datetime:
    """Parse a stored timestamp as an aware UTC datetime.

    Accepts ``...Z``, an explicit offset, or a naive value (meaning UTC); a space may stand for
    the ``T``. Anything else raises :class:`BadTimestamp`.
    """
    if isinstance(value, datetime):  # PostgreSQL drivers may hand back datetimes already
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if not isinstance(value, str) or not value.strip():
        raise BadTimestamp(f"timestamp must be a non-empty string, got {value!r}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: in range as written, not once moved to UTC
        raise BadTimestamp(f"unreadable timestamp {value!r}") from None


def parse_utc_or_none(value: object) -> datetime | None:
    """:func:`parse_utc`, or None for a value that cannot be read (an optional or informational stamp)."""
    try:
        return parse_utc(value)
    except BadTimestamp:
        return None


def format_utc(moment: datetime) -> str:
    """Format as Trinity writes it: ``2026-11-27T18:27:49.055123Z``."""
    if moment.tzinfo is None:
        raise ValueError("refusing to format a naive datetime: pass an aware UTC one")
    utc = moment.astimezone(UTC)
    # The year by hand: strftime writes year 999 as "999", which fromisoformat cannot read back.
    return f"{utc.year:04d}" + utc.strftime("-%m-%dT%H:%M:%S.%fZ")


def utcnow() -> datetime:
    return datetime.now(UTC)
