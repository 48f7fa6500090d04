"""When was a run lost? The moment "detected after" counts from, one rule per remediation.

- ``terminate_overdue``: the run's start + its effective timeout (it became overdue then).
- ``fail_orphan``: the exporter's first scrape that found the run unknown to its agent, carried by
  the orphan alert's ``unknown_since`` annotation (``alerts/rules.py``); unknown without it.
- a claimed result (``claim_result``, or an orphan alert that found a retained result): when the
  agent kept it (``retained_at``): the run finished then, by the agent's own word.

"Detected after" is the recovery's time minus this moment; the alert's ``startsAt`` (time to
recovery) leaves out how long the rules waited, which is most of what an operator cares about.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from exec_watchdog.common.contract import CLAIM_RESULT, FAIL_ORPHAN, TERMINATE_OVERDUE, UNKNOWN_SINCE_ANNOTATION

# Unix seconds the annotation may hold: 2001 .. 2286. Anything else is a broken template or input.
_EARLIEST, _LATEST = 1e9, 1e10


def unknown_since(annotations: Mapping[str, str]) -> datetime | None:
    """The orphan alert's first-unknown time, or None when absent, "unknown" or unreadable."""
    raw = annotations.get(UNKNOWN_SINCE_ANNOTATION, "")
    if len(raw) > 40:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None
    if not math.isfinite(seconds) or not _EARLIEST <= seconds <= _LATEST:
        return None
    return datetime.fromtimestamp(seconds, UTC)


def lost_at(remediation: str, *, annotations: Mapping[str, str], started_at: datetime, timeout_seconds: int,
            retained_at: datetime | None) -> datetime | None:
    """The moment the run was lost, by the rule of the alert's remediation; None when unknown.
    ``retained_at`` is set only when the recovery claims a retained result."""
    if remediation == TERMINATE_OVERDUE:
        return started_at + timedelta(seconds=timeout_seconds)
    if retained_at is not None or remediation == CLAIM_RESULT:
        return retained_at
    if remediation == FAIL_ORPHAN:
        return unknown_since(annotations)
    return None


def detected_after(lost: datetime | None, recovered_at: datetime) -> float | None:
    return None if lost is None else max(0.0, (recovered_at - lost).total_seconds())
