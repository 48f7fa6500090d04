"""Pause and resume remediation from the live page: one Alertmanager silence on every remediation.

A pause is an Alertmanager silence whose matchers all name the ``remediation`` label and together
cover every remediation the rules ask for (``remediation=~".+"``, as the runbook's ``amtool`` line
makes it), so a pause made with ``amtool`` or Grafana shows here too. Pausing creates one through
Alertmanager's API (the HA peers share it); resuming expires the pause silences, never any other.
Input is checked before anything is sent: a bad request changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from exec_watchdog.common.contract import ACTIONS, REMEDIATION_LABEL
from exec_watchdog.platform_access.timestamps import utcnow
from exec_watchdog.remediator.silences import MAX_SILENCES_BYTES, Matcher

MAX_AUTHOR, MAX_COMMENT = 100, 500
MIN_MINUTES, MAX_MINUTES = 1, 7 * 24 * 60
PAUSE_MATCHER = {"name": REMEDIATION_LABEL, "value": ".+", "isRegex": True, "isEqual": True}


class PauseInputError(ValueError):
    """The request cannot succeed as sent (answered 400)."""


class AlertmanagerUnavailable(RuntimeError):
    """No configured Alertmanager answered (answered 503: try again)."""


@dataclass(frozen=True, slots=True)
class PauseRequest:
    author: str
    comment: str
    minutes: int

    @classmethod
    def parse(cls, body: object) -> PauseRequest:
        if not isinstance(body, dict):
            raise PauseInputError("the body must be a JSON object with author, comment and duration_minutes")
        unknown = set(body) - {"author", "comment", "duration_minutes"}
        if unknown:
            raise PauseInputError(f"unknown fields: {', '.join(sorted(map(str, unknown)))[:200]}")
        author, comment = _text(body.get("author"), "author", MAX_AUTHOR), _text(body.get("comment"), "comment",
                                                                                    MAX_COMMENT)
        minutes = body.get("duration_minutes")
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not MIN_MINUTES <= minutes <= MAX_MINUTES:
            raise PauseInputError(f"duration_minutes must be a whole number from {MIN_MINUTES} to {MAX_MINUTES} "
                                  "(7 days)")
        return cls(author, comment, minutes)


def _text(value: object, name: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PauseInputError(f"{name} is required: who pauses, and why, is what the next engineer needs")
    if len(value) > limit:
        raise PauseInputError(f"{name} is at most {limit} characters")
    if any(ord(c) < 32 and c not in "\t" for c in value):
        raise PauseInputError(f"{name} must be one line without control characters")
    return value.strip()


@dataclass(frozen=True, slots=True)
class Pause:
    """An active silence that pauses every remediation."""

    silence_id: str
    created_by: str
    comment: str
    starts_at: str
    ends_at: str

    def as_json(self) -> dict[str, str]:
        return {"silence_id": self.silence_id, "created_by": self.created_by, "comment": self.comment,
                "starts_at": self.starts_at, "ends_at": self.ends_at}


def pause_of(item: Mapping[str, Any]) -> Pause | None:
    """The silence as a pause, or None when it is not active or does not cover every remediation."""
    status = item.get("status")
    if not isinstance(status, dict) or status.get("state") != "active":
        return None
    raw = item.get("matchers")
    if not isinstance(raw, list) or not raw:
        return None
    try:
        matchers = [Matcher.parse(m) for m in raw]
    except ValueError:
        return None
    if any(m.name != REMEDIATION_LABEL for m in matchers):
        return None  # narrower: silences some alerts only (one agent, one execution)
    if not all(m.matches({REMEDIATION_LABEL: action}) for m in matchers for action in ACTIONS):
        return None
    return Pause(str(item.get("id"))[:64], str(item.get("createdBy", ""))[:MAX_AUTHOR],
                 str(item.get("comment", ""))[:MAX_COMMENT], str(item.get("startsAt", ""))[:40],
                 str(item.get("endsAt", ""))[:40])


class Pauser:
    """Talks to the configured Alertmanagers: the first that answers serves the request."""

    def __init__(self, urls: tuple[str, ...], http: httpx.AsyncClient) -> None:
        self.urls = tuple(u.rstrip("/") for u in urls)
        self._http = http

    async def _first(self, method: str, path: str, **kwargs: Any) -> tuple[str, httpx.Response]:
        if not self.urls:
            raise AlertmanagerUnavailable("no Alertmanager configured (--alertmanager-url): pause with amtool")
        errors = []
        for url in self.urls:
            try:
                response = await self._http.request(method, f"{url}{path}", **kwargs)
            except httpx.HTTPError as exc:
                errors.append(f"{url}: {type(exc).__name__}")
                continue
            if response.status_code >= 500:
                errors.append(f"{url}: HTTP {response.status_code}")
                continue
            return url, response
        raise AlertmanagerUnavailable("no Alertmanager answered: " + "; ".join(errors))

    async def pauses(self) -> list[Pause]:
        _, response = await self._first("GET", "/api/v2/silences")
        if response.status_code != 200 or len(response.content) > MAX_SILENCES_BYTES:
            raise AlertmanagerUnavailable(f"silences list: HTTP {response.status_code}")
        try:
            body = json.loads(response.content)
        except ValueError as exc:
            raise AlertmanagerUnavailable(f"silences list is not JSON: {exc}") from None
        found = [pause_of(item) for item in body if isinstance(item, dict)] if isinstance(body, list) else []
        return sorted((p for p in found if p is not None), key=lambda p: p.ends_at)

    async def pause(self, request: PauseRequest, now: datetime | None = None) -> tuple[str, Pause]:
        """Create the silence; returns the Alertmanager that took it and the pause."""
        starts = now or utcnow()
        ends = starts + timedelta(minutes=request.minutes)
        body = {"matchers": [PAUSE_MATCHER], "startsAt": starts.isoformat(), "endsAt": ends.isoformat(),
                "createdBy": request.author, "comment": request.comment}
        url, response = await self._first("POST", "/api/v2/silences", json=body)
        if response.status_code != 200:
            raise AlertmanagerUnavailable(f"{url} refused the silence: HTTP {response.status_code} "
                                          f"{response.text[:200]}")
        silence_id = str(response.json().get("silenceID", ""))[:64]
        return url, Pause(silence_id, request.author, request.comment, starts.isoformat(), ends.isoformat())

    async def resume(self, silence_id: str | None) -> list[str]:
        """Expire the given pause silence, or every one; returns the ids expired."""
        pauses = await self.pauses()
        chosen = [p for p in pauses if silence_id in (None, p.silence_id)]
        if silence_id is not None and not chosen:
            raise PauseInputError(f"{silence_id!r} is not an active silence pausing remediation")
        expired = []
        for p in chosen:
            _, response = await self._first("DELETE", f"/api/v2/silence/{p.silence_id}")
            if response.status_code not in (200, 404):  # 404: already gone
                raise AlertmanagerUnavailable(f"expiring {p.silence_id}: HTTP {response.status_code}")
            expired.append(p.silence_id)
        return expired

