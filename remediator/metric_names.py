"""The names the remediator publishes on /metrics (see docs/contracts.md)."""

from __future__ import annotations

PREFIX = "exec_watchdog_remediator"

REQUESTS = f"{PREFIX}_requests_total"
ALERTS = f"{PREFIX}_alerts_total"
REMEDIATIONS = f"{PREFIX}_remediations_total"
REMEDIATION_DURATION = f"{PREFIX}_remediation_duration_seconds"
TIME_TO_RECOVERY = f"{PREFIX}_time_to_recovery_seconds"
BREAKER_OPEN = f"{PREFIX}_breaker_open"
PENDING_FINISHES = f"{PREFIX}_pending_finishes"
RECOVERY_TIMESTAMP = f"{PREFIX}_recovery_timestamp_seconds"

ALL = (REQUESTS, ALERTS, REMEDIATIONS, REMEDIATION_DURATION, TIME_TO_RECOVERY, BREAKER_OPEN, PENDING_FINISHES,
       RECOVERY_TIMESTAMP)
