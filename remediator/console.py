"""What the live page's "Now" header shows: the state of remediation and what needs a person.

- Remediation: paused (by which silences, who, until when), breaker open (with the reset action),
  shadow (beside the platform's own cleanup, changing nothing), dry run, or active — several can
  hold at once; ``state`` names the one that matters most.
- Alerts firing now with a remediation label that nothing has recovered yet (from Alertmanager's
  ``/api/v2/alerts``), each with the last decision taken on its execution, if any.
- Decisions in the last hour and the last day, by action and outcome (from the audit trail).
- When the last notification reached this replica.

Alertmanager not answering is shown, not fatal: the rest of the header still comes from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from exec_watchdog.common.contract import GRAFANA_DASHBOARD_UID, REMEDIATION_LABEL
from exec_watchdog.platform_access.timestamps import format_utc
from exec_watchdog.remediator import audit
from exec_watchdog.remediator.breaker import Breaker
from exec_watchdog.remediator.pause import AlertmanagerUnavailable, Pauser

MAX_FIRING = 200  # shown at most; the count says how many there are
MAX_ALERTS_BYTES = 16 * 1024 * 1024
ACTED = ("recovered", "would_recover")  # a decision that took (or, in dry run, would take) the action


@dataclass
class Console:
    """The page's view of the outside: Alertmanager, Grafana, and the last notification seen."""

    pauser: Pauser
    http: httpx.AsyncClient
    grafana_url: str = ""
    last_notification_at: datetime | None = field(default=None)

    @property
    def grafana_dashboard_url(self) -> str:
        return f"{self.grafana_url.rstrip('/')}/d/{GRAFANA_DASHBOARD_UID}" if self.grafana_url else ""

    async def firing(self) -> list[dict[str, Any]]:
        """Alertmanager's alerts that carry a remediation label and are still firing."""
        if not self.pauser.urls:
            raise AlertmanagerUnavailable("no Alertmanager configured (--alertmanager-url)")
        for url in self.pauser.urls:
            try:
                response = await self.http.get(f"{url}/api/v2/alerts", params={
                    "active": "true", "silenced": "true", "inhibited": "true",
                    "filter": f'{REMEDIATION_LABEL}=~".+"'})
            except httpx.HTTPError:
                continue
            if response.status_code == 200 and len(response.content) <= MAX_ALERTS_BYTES:
                try:
                    body = json.loads(response.content)
                except ValueError:
                    continue
                if isinstance(body, list):
                    return [_alert(a, url) for a in body if isinstance(a, dict)]
        raise AlertmanagerUnavailable("no Alertmanager answered GET /api/v2/alerts")


def _alert(raw: dict[str, Any], alertmanager: str) -> dict[str, Any]:
    labels: dict[str, Any] = raw["labels"] if isinstance(raw.get("labels"), dict) else {}
    status: dict[str, Any] = raw["status"] if isinstance(raw.get("status"), dict) else {}
    generator = str(raw.get("generatorURL", ""))
    return {
        "alertname": str(labels.get("alertname", ""))[:200], "agent": str(labels.get("agent", ""))[:200],
        "execution_id": str(labels.get("execution_id", ""))[:200],
        "remediation": str(labels.get(REMEDIATION_LABEL, ""))[:200], "fingerprint": str(raw.get("fingerprint"))[:64],
        "starts_at": str(raw.get("startsAt", ""))[:40], "state": str(status.get("state", ""))[:20],
        "silenced_by": [str(s)[:64] for s in status.get("silencedBy") or []][:10],
        "generator_url": generator if generator.startswith(("http://", "https://")) else None,
        "alertmanager_url": alertmanager,
    }


def counts(conn: sa.Connection, now: datetime) -> dict[str, dict[str, dict[str, int]]]:
    """Decisions by action and outcome in the last hour and the last day."""
    d = audit.decisions
    result: dict[str, dict[str, dict[str, int]]] = {}
    for name, window in (("hour", timedelta(hours=1)), ("day", timedelta(days=1))):
        rows = conn.execute(sa.select(d.c.remediation, d.c.outcome, sa.func.count())
                            .where(d.c.decided_at >= format_utc(now - window))
                            .group_by(d.c.remediation, d.c.outcome)).all()
        table: dict[str, dict[str, int]] = {}
        for action, outcome, count in rows:
            table.setdefault(action or "none", {})[outcome] = int(count)
        result[name] = table
    return result


def last_decisions(conn: sa.Connection, execution_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The newest decision per execution, and whether any decision acted on it."""
    d = audit.decisions
    found: dict[str, dict[str, Any]] = {}
    if not execution_ids:
        return found
    rows = conn.execute(sa.select(d.c.execution_id, d.c.outcome, d.c.reason, d.c.decided_at)
                        .where(d.c.execution_id.in_(execution_ids)).order_by(d.c.id.desc())).all()
    for execution_id, outcome, reason, decided_at in rows:
        entry = found.setdefault(execution_id, {"outcome": outcome, "reason": reason[:300], "decided_at": decided_at,
                                                "acted": False})
        entry["acted"] = entry["acted"] or outcome in ACTED
    return found


def last_decided_at(conn: sa.Connection) -> str | None:
    value = conn.execute(sa.select(sa.func.max(audit.decisions.c.decided_at))).scalar()
    return None if value is None else str(value)


def remediation_state(pauses: list[dict[str, str]] | None, breaker: Breaker, dry_run: bool,
                      shadow: bool = False) -> dict[str, Any]:
    """``pauses`` is None when Alertmanager could not be asked (then nobody knows if it is paused)."""
    state = ("paused" if pauses else "breaker_open" if breaker.is_open else "shadow" if shadow
             else "dry_run" if dry_run else "unknown" if pauses is None else "active")
    return {"state": state, "paused_by": pauses or [], "dry_run": dry_run, "shadow": shadow,
            "breaker": {"open": breaker.is_open, "max_actions": breaker.max_actions,
                        "window_seconds": breaker.window_seconds, "reset": "/api/v1/breaker/reset"}}
