"""Is the fleet guard firing right now? Asked at action time, before a run is failed on an agent
that does not answer.

Alertmanager already inhibits every such remediation while ``ExecWatchdogFleetUnreachable`` fires,
but a notification may have left before the guard fired (or be a late HA duplicate). So the
remediator asks the same Alertmanagers it asks about silences (``GET /api/v2/alerts``, filtered to
the guard): any such alert held there, silenced or not, holds the run (an operator's silence of
the page does not lift its inhibition either). Alertmanager not answering holds it too: we cannot
tell whether the fault is ours.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Literal

import httpx

from exec_watchdog.common.contract import FLEET_UNREACHABLE

MAX_ALERTS_BYTES = 16 * 1024 * 1024

State = Literal["clear", "firing", "unknown", "not_checked"]


@dataclass(frozen=True, slots=True)
class FleetState:
    state: State
    detail: str = ""

    @property
    def holds(self) -> bool:
        """True when a run must not be failed on an agent's silence now."""
        return self.state in ("firing", "unknown")

    def describe(self) -> str:
        return f"{self.state}: {self.detail}" if self.detail else self.state


NOT_CHECKED = FleetState("not_checked", "no Alertmanager configured: its inhibition is the only guard")


class FleetGuard:
    """Asks each configured Alertmanager in turn; one answer suffices (an HA pair shares alerts)."""

    def __init__(self, urls: list[str], http: httpx.AsyncClient, deadline_seconds: float = 3.0) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self._http = http
        self.deadline_seconds = deadline_seconds

    async def _fetch(self, url: str) -> object:
        params = {"filter": f'alertname="{FLEET_UNREACHABLE}"'}
        async with self._http.stream("GET", f"{url}/api/v2/alerts", params=params) as response:
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_ALERTS_BYTES:
                    raise ValueError(f"alerts list larger than {MAX_ALERTS_BYTES} bytes")
        return json.loads(body)

    async def state(self) -> FleetState:
        errors: list[str] = []
        for url in self.urls:
            try:
                async with asyncio.timeout(self.deadline_seconds):
                    found = await self._fetch(url)
            except TimeoutError:
                errors.append(f"{url}: no answer within {self.deadline_seconds:g} s")
                continue
            except (httpx.HTTPError, ValueError, RecursionError) as exc:
                errors.append(f"{url}: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            if not isinstance(found, list):
                errors.append(f"{url}: /api/v2/alerts did not return a list")
                continue
            firing = [a for a in found if isinstance(a, dict)
                      and isinstance(a.get("labels"), dict) and a["labels"].get("alertname") == FLEET_UNREACHABLE]
            if firing:
                return FleetState("firing", f"{FLEET_UNREACHABLE} is active in {url}")
            return FleetState("clear", f"asked {url}")
        return FleetState("unknown", "; ".join(errors) or "no Alertmanager answered")
