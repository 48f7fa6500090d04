"""A finished run's retained result, as the agent serves it (Trinity #2944).

``GET /api/executions/{id}/result`` answers 200 with the run's terminal envelope plus
``retained_at`` (ISO, written with an offset) and ``truncated_log``; 404
``{"detail": {"code": "no_retained_result"}}`` when nothing is retained (or it expired); a bare 404
from an older agent image that has no such route. This module turns the 200 body into a
:class:`RetainedResult` or says why it cannot: the body is untrusted and may be huge, so its size is
bounded before it is parsed and the response text again after. Every text in it is normalised here
(``common/untrusted.py``: valid Unicode, no control characters but newline and tab, bounded); a
cost that is not a finite number of at least 0 is not kept (``cost_refused`` says what it was);
the ``execution_id`` the envelope names, if any, is kept for the caller to compare. What the
watchdog then does with a result (when to claim, which status to write) is remediator policy
(``remediator/claim.py``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exec_watchdog.common.untrusted import clean, clean_optional
from exec_watchdog.platform_access.timestamps import BadTimestamp, parse_utc

NO_RETAINED_RESULT = "no_retained_result"
MAX_BODY_BYTES = 20_000_000  # a larger body is not read: the claim is retried later, never failed
MAX_RESPONSE_CHARS = 4_000_000  # Trinity's bound on a claimed response
MAX_SHORT_CHARS = 200  # status, error_code, session_id, execution_id
MAX_REASON_CHARS = 2_000  # error, terminal_reason (Trinity caps the text it writes at 2,000)


class BadRetainedResult(ValueError):
    """A 200 answer that is not a usable retained result (the claim is retried, never failed)."""


@dataclass(frozen=True, slots=True)
class NoRetainedResult:
    """The agent's coded 404: it has the route and holds nothing for this id."""


@dataclass(frozen=True, slots=True)
class RetainedResult:
    status: str  # the envelope's own word: success | failed | cancelled (anything else is not terminal)
    retained_at: datetime
    response: str | None
    error: str | None
    error_code: str | None
    terminal_reason: str | None
    cost_usd: float | None
    session_id: str | None
    execution_log: str | None  # the transcript as JSON text, ready for the column
    truncated_log: bool
    execution_id: str | None = None  # the id the envelope names, when it names one (Trinity's does not)
    cost_refused: str | None = None  # metadata.cost_usd as sent, when it was not a finite cost >= 0


def is_coded_missing(body: bytes) -> bool:
    """True for the coded 404 body; False for a bare or unreadable one (an older image)."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return False
    detail = parsed.get("detail") if isinstance(parsed, dict) else None
    return isinstance(detail, dict) and detail.get("code") == NO_RETAINED_RESULT


def _optional_text(body: dict[str, Any], key: str, limit: int) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRetainedResult(f"{key} must be a string or null")
    return clean(value, limit)


def _cost(value: object) -> tuple[float | None, str | None]:
    """(the cost to store, what was refused): only a finite number of at least 0 is a cost."""
    if value is None:
        return None, None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            cost = float(value)
        except OverflowError:  # an integer too large for a float
            return None, clean(str(value), 40)
        if math.isfinite(cost) and cost >= 0:
            return cost, None
    return None, clean(repr(value), 40)


def parse_retained(raw: bytes) -> RetainedResult:
    """The 200 body of ``/result`` as a :class:`RetainedResult`; :class:`BadRetainedResult` if unusable."""
    if len(raw) > MAX_BODY_BYTES:
        raise BadRetainedResult(f"body is larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: hostile nesting depth
        raise BadRetainedResult("body is not JSON we can read") from None
    if not isinstance(body, dict):
        raise BadRetainedResult("body is not a JSON object")
    status = body.get("status")
    if not isinstance(status, str) or not status:
        raise BadRetainedResult("status must be a non-empty string")
    named = body.get("execution_id")
    if named is not None and not isinstance(named, str):
        raise BadRetainedResult("execution_id must be a string when present")
    stamp = body.get("retained_at")
    if not isinstance(stamp, str):
        raise BadRetainedResult("retained_at must be an ISO timestamp")
    try:
        retained_at = parse_utc(stamp)
    except BadTimestamp as exc:
        raise BadRetainedResult(f"retained_at: {exc}") from None
    raw_response = body.get("response")
    if isinstance(raw_response, str) and len(raw_response) > MAX_RESPONSE_CHARS:
        raise BadRetainedResult(f"response is longer than {MAX_RESPONSE_CHARS} characters")
    response = _optional_text(body, "response", MAX_RESPONSE_CHARS)
    metadata = body.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    cost, cost_refused = _cost(metadata.get("cost_usd"))
    session = body.get("session_id") or metadata.get("session_id")
    log = body.get("execution_log")
    return RetainedResult(
        status=clean(status, MAX_SHORT_CHARS), retained_at=retained_at, response=response,
        error=_optional_text(body, "error", MAX_REASON_CHARS),
        error_code=_optional_text(body, "error_code", MAX_SHORT_CHARS),
        terminal_reason=_optional_text(body, "terminal_reason", MAX_REASON_CHARS),
        cost_usd=cost, cost_refused=cost_refused,
        session_id=clean(session, MAX_SHORT_CHARS) if isinstance(session, str) else None,
        # json.dumps escapes every control character and lone surrogate: a transcript given as JSON
        # is already clean text; one given as a string is normalised like the rest.
        execution_log=None if log is None else (clean(log, MAX_BODY_BYTES) if isinstance(log, str)
                                                else json.dumps(log)),
        truncated_log=body.get("truncated_log") is True,
        execution_id=clean_optional(named, MAX_SHORT_CHARS),
    )
