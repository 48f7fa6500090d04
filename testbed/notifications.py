"""Alertmanager webhook notifications, shaped as Alertmanager sends them (copied from the captured
real payloads in tests/fixtures/alertmanager/)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from exec_watchdog.platform_access.timestamps import utcnow


def alert(execution_id: str, agent: str, remediation: str = "fail_orphan", *, status: str = "firing",
          fingerprint: str | None = None, starts_at: datetime | None = None, **labels: str) -> dict[str, Any]:
    """One alert as Alertmanager sends it (shape copied from the captured real payloads)."""
    name = {"fail_orphan": "ExecWatchdogExecutionOrphaned",
            "terminate_overdue": "ExecWatchdogExecutionOverdue",
            "reclaim_expired_slot": "ExecWatchdogSlotExpired",
            "reclaim_slot_unreachable": "ExecWatchdogSlotExpiredAgentUnreachable",
            "release_leaked_slot": "ExecWatchdogSlotLeaked"}.get(remediation, "Other")
    started = (starts_at or utcnow() - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return {
        "status": status,
        "labels": {"alertname": name, "agent": agent, "execution_id": execution_id, "schedule_id": "__manual__",
                   "remediation": remediation, "severity": "critical", **labels},
        "annotations": {"summary": "test"},
        "startsAt": started,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else utcnow().isoformat(),
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": fingerprint or f"fp{abs(hash(execution_id)) % 10**12:012d}",
    }


def notification(*alerts: dict[str, Any]) -> dict[str, Any]:
    firing = any(a["status"] == "firing" for a in alerts)
    return {"receiver": "remediator", "status": "firing" if firing else "resolved", "alerts": list(alerts),
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093",
            "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0}
