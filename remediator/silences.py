"""Is an alert silenced right now? Checked just before acting, since a silence may have been
created after Alertmanager sent the notification.

Matching follows Alertmanager exactly: a regex matcher is Go's RE2 anchored as
``^(?:value)$`` (``labels.NewMatcher``), so it is compiled here with RE2 too (``google-re2``):
the same syntax (``[[:alpha:]]``, ``\\Q…\\E``, ``\\p{L}``, ``(?U)``, ``\\z``) and linear time, so
no silence can stall the event loop. A silence we cannot read is reported and affects only the
alerts it might cover; it never blinds the check for the others.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import re2
import structlog

from exec_watchdog.common.contract import Outcome

log = structlog.get_logger("exec_watchdog.remediator")
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is our error to report, not a line on stderr
MAX_SILENCES_BYTES = 16 * 1024 * 1024


class SilenceCheckFailed(RuntimeError):
    """Alertmanager could not be asked; acting anyway could override an operator's silence."""


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    value: str
    is_regex: bool
    is_equal: bool
    pattern: Any = None  # compiled RE2 for regex matchers; None when it does not compile

    @classmethod
    def parse(cls, raw: object) -> Matcher:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not isinstance(raw.get("value"), str):
            raise ValueError("a matcher needs string 'name' and 'value'")
        is_regex, is_equal = raw.get("isRegex", False), raw.get("isEqual", True)
        if not isinstance(is_regex, bool) or not isinstance(is_equal, bool):
            raise ValueError("isRegex and isEqual must be booleans")
        pattern = None
        if is_regex:
            try:
                pattern = re2.compile(f"^(?:{raw['value']})$", _RE2_OPTIONS)
            except re2.error as exc:
                raise ValueError(f"regex {raw['value'][:80]!r} does not compile: {exc}") from None
        return cls(raw["name"], raw["value"], is_regex, is_equal, pattern)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")  # a missing label matches as the empty string
        hit = self.pattern.search(actual) is not None if self.is_regex else actual == self.value
        return bool(hit) if self.is_equal else not hit


@dataclass(frozen=True, slots=True)
class Silence:
    """An active silence. ``problem`` is set when one of its matchers could not be read: then
    only its readable matchers are known, and an alert they match may or may not be silenced."""

    id: str
    matchers: tuple[Matcher, ...]
    problem: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool | None:
        """True silenced, False not, None cannot tell (an unreadable matcher)."""
        if not all(m.matches(labels) for m in self.matchers):
            return False
        return None if self.problem else True


def covering(active: Sequence[Silence], labels: Mapping[str, str]) -> tuple[Outcome, str] | None:
    """The outcome a silence imposes on an alert with these labels: ``("silenced", why)``,
    ``("retry", why)`` when only an unreadable silence might cover it, or None."""
    unsure = None
    for silence in active:
        hit = silence.matches(labels)
        if hit:
            return "silenced", f"silenced now by {silence.id}"
        if hit is None and unsure is None:
            unsure = silence
    if unsure is not None:
        return "retry", f"silence {unsure.id} may cover this alert but cannot be read: {unsure.problem}"
    return None


def parse_silences(body: Any) -> list[Silence]:
    """Active silences from ``GET /api/v2/silences``; expired and pending ones do not count."""
    if not isinstance(body, list):
        raise SilenceCheckFailed("Alertmanager /api/v2/silences did not return a list")
    active = []
    for item in body:
        if not isinstance(item, dict) or not isinstance(item.get("status"), dict) \
                or item["status"].get("state") != "active":
            continue
        silence_id = str(item.get("id"))[:64]
        raw_matchers = item.get("matchers")
        readable, problems = [], []
        for raw in raw_matchers if isinstance(raw_matchers, list) else []:
            try:
                readable.append(Matcher.parse(raw))
            except ValueError as exc:
                problems.append(str(exc))
        if not isinstance(raw_matchers, list) or not raw_matchers:
            problems.append("no matchers list")
        if problems:
            log.warning("unreadable_silence", silence=silence_id, problem="; ".join(problems)[:300])
        active.append(Silence(silence_id, tuple(readable), "; ".join(problems)[:300]))
    return active


@dataclass(frozen=True, slots=True)
class SilenceCheck:
    """One re-check: the active silences, the Alertmanager that answered, and those that did not."""

    silences: tuple[Silence, ...]
    answered_by: str
    unanswered: tuple[str, ...] = ()  # "url: error", in the order they were asked


class SilenceChecker:
    """Asks each configured Alertmanager (an HA pair shares silences, one answer suffices).

    Each ask has an overall deadline: httpx's timeouts bound each read, not a peer that trickles.
    """

    def __init__(self, urls: list[str], http: httpx.AsyncClient, deadline_seconds: float = 3.0) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.http = http  # shared with the fleet guard's re-check (remediator/fleet.py)
        self.deadline_seconds = deadline_seconds

    async def _fetch(self, url: str) -> Any:
        async with self.http.stream("GET", f"{url}/api/v2/silences") as response:
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_SILENCES_BYTES:
                    raise ValueError(f"silences list larger than {MAX_SILENCES_BYTES} bytes")
        return json.loads(body)

    async def active(self) -> list[Silence]:
        return list((await self.check()).silences)

    async def check(self) -> SilenceCheck:
        errors: list[str] = []
        for url in self.urls:
            try:
                async with asyncio.timeout(self.deadline_seconds):
                    return SilenceCheck(tuple(parse_silences(await self._fetch(url))), url, tuple(errors))
            except TimeoutError:
                errors.append(f"{url}: no answer within {self.deadline_seconds:g} s")
            except (httpx.HTTPError, ValueError, RecursionError) as exc:
                errors.append(f"{url}: {type(exc).__name__}: {str(exc)[:200]}")
        raise SilenceCheckFailed("; ".join(errors) or "no Alertmanager configured")
