"""Is an alert silenced right now? Checked just before acting, since a silence may have been
created after Alertmanager sent the notification."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx


class SilenceCheckFailed(RuntimeError):
    """Alertmanager could not be asked; acting anyway could override an operator's silence."""


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    value: str
    is_regex: bool
    is_equal: bool

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        hit = re.fullmatch(self.value, actual) is not None if self.is_regex else actual == self.value
        return hit if self.is_equal else not hit


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


def parse_silences(body: Any) -> list[Silence]:
    """Active silences from ``GET /api/v2/silences``; expired and pending ones do not count."""
    if not isinstance(body, list):
        raise SilenceCheckFailed("Alertmanager /api/v2/silences did not return a list")
    active = []
    for item in body:
        if not isinstance(item, dict) or item.get("status", {}).get("state") != "active":
            continue
        try:
            matchers = tuple(Matcher(m["name"], m["value"], bool(m.get("isRegex")), bool(m.get("isEqual", True)))
                             for m in item["matchers"])
            for m in matchers:
                if m.is_regex:
                    re.compile(m.value)
        except (KeyError, TypeError, re.error) as exc:
            raise SilenceCheckFailed(f"unreadable silence {item.get('id')!r}: {exc}") from None
        active.append(Silence(str(item.get("id")), matchers))
    return active


@dataclass(frozen=True, slots=True)
class SilenceCheck:
    """One re-check: the active silences, the Alertmanager that answered, and those that did not."""

    silences: tuple[Silence, ...]
    answered_by: str
    unanswered: tuple[str, ...] = ()  # "url: error", in the order they were asked


class SilenceChecker:
    """Asks each configured Alertmanager (an HA pair shares silences, one answer suffices)."""

    def __init__(self, urls: list[str], http: httpx.AsyncClient) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self._http = http

    async def active(self) -> list[Silence]:
        return list((await self.check()).silences)

    async def check(self) -> SilenceCheck:
        errors: list[str] = []
        for url in self.urls:
            try:
                response = await self._http.get(f"{url}/api/v2/silences", timeout=3.0)
                response.raise_for_status()
                return SilenceCheck(tuple(parse_silences(response.json())), url, tuple(errors))
            except (httpx.HTTPError, ValueError) as exc:
                errors.append(f"{url}: {exc}")
        raise SilenceCheckFailed("; ".join(errors) or "no Alertmanager configured")
