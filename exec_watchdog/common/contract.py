"""The names the parts agree on: Prometheus job names, alert names, the remediation label and its
values, and what the remediator decides.

Spelled once here for the exporter, the rules, the remediator, the dashboard and the deployments
(docs/contracts.md); renaming one is a change to every part, and a test of each part says so.
"""

from __future__ import annotations

from typing import Final, Literal

# The Prometheus jobs that scrape the exporter (every shard) and the remediator. The rules'
# up{job=...} selectors, the dashboard and every generated scrape config use these.
EXPORTER_JOB = "exec-watchdog-exporter"
REMEDIATOR_JOB = "exec-watchdog-remediator"

# The alerts the rules raise.
ORPHANED = "ExecWatchdogExecutionOrphaned"
OVERDUE = "ExecWatchdogExecutionOverdue"
COMPLETED_UNREPORTED = "ExecWatchdogExecutionCompletedUnreported"
STUCK = "ExecWatchdogExecutionStuck"
AGENT_UNREACHABLE = "ExecWatchdogAgentUnreachable"
EXPORTER_DOWN = "ExecWatchdogExporterDown"
DATABASE_UNREACHABLE = "ExecWatchdogDatabaseUnreachable"
REMEDIATOR_FAILING = "ExecWatchdogRemediatorFailing"
BREAKER_OPEN = "ExecWatchdogRemediatorBreakerOpen"
HEARTBEAT = "ExecWatchdogHeartbeat"
TIMEOUT_TOO_TIGHT = "ExecWatchdogTimeoutTooTight"
TIMEOUT_TOO_LOOSE = "ExecWatchdogTimeoutTooLoose"
TIMEOUT_ALERTS = (TIMEOUT_TOO_TIGHT, TIMEOUT_TOO_LOOSE)
ALERTS = (ORPHANED, OVERDUE, COMPLETED_UNREPORTED, STUCK, AGENT_UNREACHABLE, EXPORTER_DOWN, DATABASE_UNREACHABLE,
          REMEDIATOR_FAILING, BREAKER_OPEN, HEARTBEAT, *TIMEOUT_ALERTS)
REMEDIATION_ALERTS = (ORPHANED, OVERDUE, COMPLETED_UNREPORTED)  # the alerts that carry a remediation

# What an alert rule asks the remediator to do.
REMEDIATION_LABEL = "remediation"
FAIL_ORPHAN = "fail_orphan"  # the agent no longer knows the run: mark it failed, release the slot
TERMINATE_OVERDUE = "terminate_overdue"  # past its timeout: terminate on the agent, then mark failed
CLAIM_RESULT = "claim_result"  # recently completed on the agent, still running in the database: claim the result
ACTIONS = (FAIL_ORPHAN, TERMINATE_OVERDUE, CLAIM_RESULT)

# What the remediator decided for one alert: the webhook's answer, the audit row, the metric label.
Outcome = Literal["recovered", "would_recover", "skipped", "silenced", "ignored", "retry", "lost_race",
                  "breaker_open", ""]
UNDECIDED: Final = ""  # no check has decided yet: the alert goes on to the next one
