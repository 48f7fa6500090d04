"""The names the parts agree on: Prometheus job names, metric names, alert names, the remediation
label and its values, and what the remediator decides.

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
# Capacity slots (Trinity's Phase 3, its slot TTL and its start-up leak sweep: alerts/slot_rules.py).
SLOT_EXPIRED = "ExecWatchdogSlotExpired"
SLOT_EXPIRED_AGENT_UNREACHABLE = "ExecWatchdogSlotExpiredAgentUnreachable"
SLOT_LEAKED = "ExecWatchdogSlotLeaked"
SLOT_ALERTS = (SLOT_EXPIRED, SLOT_EXPIRED_AGENT_UNREACHABLE, SLOT_LEAKED)
# Rows Trinity's cleanup service ends outside Phase 0 (alerts/cleanup_rules.py).
SKIPPED_UNFINALIZED = "ExecWatchdogSkippedExecutionUnfinalized"
BACKLOG_EXPIRED = "ExecWatchdogQueuedExecutionExpired"
ACTIVITY_STALE = "ExecWatchdogActivityStale"
CLEANUP_ALERTS = (SKIPPED_UNFINALIZED, BACKLOG_EXPIRED, ACTIVITY_STALE)
# Trinity's cleanup sweeps (Phase 1 stale, Phase 1b no session) and the fleet guard above them.
STALE = "ExecWatchdogExecutionStale"
NO_SESSION = "ExecWatchdogExecutionNoSession"
FLEET_UNREACHABLE = "ExecWatchdogFleetUnreachable"
SWEEP_ALERTS = (STALE, NO_SESSION, FLEET_UNREACHABLE)
# Shadow mode beside the platform's own cleanup (alerts/shadow_rules.py): for people, never remediated.
SHADOW_DISAGREEMENT = "ExecWatchdogShadowDisagreement"
ALERTS = (ORPHANED, OVERDUE, COMPLETED_UNREPORTED, STUCK, AGENT_UNREACHABLE, EXPORTER_DOWN, DATABASE_UNREACHABLE,
          REMEDIATOR_FAILING, BREAKER_OPEN, HEARTBEAT, *TIMEOUT_ALERTS, *SLOT_ALERTS, *CLEANUP_ALERTS, *SWEEP_ALERTS,
          SHADOW_DISAGREEMENT)
# The alerts that carry a remediation.
REMEDIATION_ALERTS = (ORPHANED, OVERDUE, COMPLETED_UNREPORTED, *SLOT_ALERTS, *CLEANUP_ALERTS, STALE, NO_SESSION)

# What an alert rule asks the remediator to do.
REMEDIATION_LABEL = "remediation"
FAIL_ORPHAN = "fail_orphan"  # the agent no longer knows the run: mark it failed, release the slot
TERMINATE_OVERDUE = "terminate_overdue"  # past its timeout: terminate on the agent, then mark failed
CLAIM_RESULT = "claim_result"  # recently completed on the agent, still running in the database: claim the result
# Capacity slots (remediator/slot_reclaim.py). The unreachable branch has its own value so that an
# inhibition of "remediations that depend on an agent being unreachable" can name it.
RECLAIM_EXPIRED_SLOT = "reclaim_expired_slot"  # slot past its TTL: agent asked, terminate best-effort, fail, release
RECLAIM_SLOT_UNREACHABLE = "reclaim_slot_unreachable"  # slot past its TTL, agent unreachable throughout: fail (#497)
RELEASE_LEAKED_SLOT = "release_leaked_slot"  # slot of a missing or finished row: release it, touch no row
SLOT_ACTIONS = (RECLAIM_EXPIRED_SLOT, RECLAIM_SLOT_UNREACHABLE, RELEASE_LEAKED_SLOT)
UNREACHABLE_ACTIONS = (RECLAIM_SLOT_UNREACHABLE,)  # act only because an agent stays unreachable
# Rows Trinity's cleanup service ends outside Phase 0: skipped rows, backlog.
FINALIZE_SKIPPED = "finalize_skipped"  # a skipped row without completed_at: finalize it as failed
EXPIRE_BACKLOG = "expire_backlog"  # a queued row older than 24 h: fail it
ROW_ACTIONS = (FINALIZE_SKIPPED, EXPIRE_BACKLOG)
# Trinity's 120-minute activity backstop: an activity still `started` is failed. Its alert names the
# activity (label activity_id), not an execution.
FAIL_STALE_ACTIVITY = "fail_stale_activity"
# Trinity's cleanup sweeps (remediator/stale.py).
FAIL_STALE = "fail_stale"  # past its agent's stale window, not listed by the agent: Trinity's Phase 1 text
FAIL_NO_SESSION = "fail_no_session"  # no Claude session 60 s after start, agent not answering: Trinity's Phase 1b
# Remediations that may act while the agent does not answer: the per-agent unreachable inhibition
# leaves them alone, and the fleet guard (FLEET_UNREACHABLE) holds every one of them.
SWEEP_ACTIONS = (FAIL_STALE, FAIL_NO_SESSION)
UNREACHABLE_REMEDIATIONS = (*SWEEP_ACTIONS, *UNREACHABLE_ACTIONS)
ACTIONS = (FAIL_ORPHAN, TERMINATE_OVERDUE, CLAIM_RESULT, *SLOT_ACTIONS, *ROW_ACTIONS, FAIL_STALE_ACTIVITY, FAIL_STALE,
           FAIL_NO_SESSION)

# What the remediator decided for one alert: the webhook's answer, the audit row, the metric label.
Outcome = Literal["recovered", "would_recover", "skipped", "silenced", "ignored", "retry", "lost_race",
                  "breaker_open", ""]
UNDECIDED: Final = ""  # no check has decided yet: the alert goes on to the next one


# -- The on-call console (remediator/console.py, the live page) ---------------------------------
# The orphan alert's annotation carrying the exporter's first-unknown time of its execution (unix
# seconds, or "unknown"): where "detected after" counts from for an orphan.
UNKNOWN_SINCE_ANNOTATION = "unknown_since"
# Outcomes the live page lists by default (something was done or tried); the others (waits, skips,
# silenced and ignored alerts) sit behind a toggle and always inside the story.
ACTION_OUTCOMES = ("recovered", "would_recover", "lost_race", "retry", "breaker_open")
QUIET_OUTCOMES = ("skipped", "silenced", "ignored")
# The Grafana dashboard's stable uid (grafana/builder), for links from the remediator's page.
GRAFANA_DASHBOARD_UID = "exec-watchdog"


class ExporterMetric:
    """The names the exporter publishes; exporter/families.py gives each its type, HELP and labels."""

    PREFIX = "exec_watchdog"

    EXECUTION_RUNTIME = f"{PREFIX}_execution_runtime_seconds"
    EXECUTION_TIMEOUT = f"{PREFIX}_execution_timeout_seconds"
    EXECUTION_AGENT_KNOWN = f"{PREFIX}_execution_agent_known"
    EXECUTION_RECENTLY_COMPLETED = f"{PREFIX}_execution_recently_completed"
    EXECUTION_DISPATCH_INFLIGHT = f"{PREFIX}_execution_dispatch_inflight"
    EXECUTION_UNKNOWN_SINCE = f"{PREFIX}_execution_unknown_since_timestamp_seconds"

    # Rows Trinity's cleanup service ends (issue 22): only rows that can fire, one series each.
    SKIPPED_UNFINALIZED_AGE = f"{PREFIX}_execution_skipped_unfinalized_seconds"
    QUEUED_AGE = f"{PREFIX}_execution_queued_seconds"
    ACTIVITY_STARTED_AGE = f"{PREFIX}_activity_started_seconds"

    EXECUTION_STALE_OVERRUN = f"{PREFIX}_execution_stale_overrun_seconds"
    EXECUTION_SESSIONLESS_RUNTIME = f"{PREFIX}_execution_sessionless_runtime_seconds"

    AGENT_UP = f"{PREFIX}_agent_up"
    AGENT_REGISTRY_EXECUTIONS = f"{PREFIX}_agent_registry_executions"
    AGENT_SLOTS_USED = f"{PREFIX}_agent_slots_used"
    AGENT_SLOTS_LIMIT = f"{PREFIX}_agent_slots_limit"

    # Capacity slots that can fire (exporter/slot_facts.py): past a share of their TTL, or leaked.
    SLOT_AGE = f"{PREFIX}_slot_age_seconds"
    SLOT_TTL = f"{PREFIX}_slot_ttl_seconds"
    SLOT_LEAKED = f"{PREFIX}_slot_leaked"
    SLOTS_PAUSED = f"{PREFIX}_slots_paused"

    SCRAPE_DURATION = f"{PREFIX}_exporter_scrape_duration_seconds"
    DATABASE_UP = f"{PREFIX}_exporter_database_up"
    INVALID_ROWS = f"{PREFIX}_exporter_invalid_rows"
    AGENT_POLL_ERRORS = f"{PREFIX}_exporter_agent_poll_errors_total"
    BUILD_INFO = f"{PREFIX}_build_info"

    # Run history, per schedule (exporter/history.py).
    SCHEDULE_RUN_DURATION = f"{PREFIX}_schedule_run_duration_seconds"
    SCHEDULE_RUNS_ENDED_BY_WATCHDOG = f"{PREFIX}_schedule_runs_ended_by_watchdog_total"
    SCHEDULE_TIMEOUT = f"{PREFIX}_schedule_timeout_seconds"
    HISTORY_READY = f"{PREFIX}_exporter_history_ready"
    HISTORY_SKIPPED_ROWS = f"{PREFIX}_exporter_history_skipped_rows"
    HISTORY_READ_DURATION = f"{PREFIX}_exporter_history_read_duration_seconds"
    # What of the above completed before the advice window (exporter/history.py --advice-window): the rules
    # subtract it, so the window is bounded from the first scrape, whatever history Prometheus holds.
    SCHEDULE_SUCCESSFUL_RUNS_BEFORE_WINDOW = f"{PREFIX}_schedule_successful_runs_before_window_total"
    SCHEDULE_RUNS_ENDED_BEFORE_WINDOW = f"{PREFIX}_schedule_runs_ended_by_watchdog_before_window_total"
    HISTORY_WINDOW = f"{PREFIX}_exporter_history_window_seconds"


class RemediatorMetric:
    """The names the remediator publishes on its /metrics (remediator/metrics.py)."""

    PREFIX = "exec_watchdog_remediator"

    REQUESTS = f"{PREFIX}_requests_total"
    ALERTS = f"{PREFIX}_alerts_total"
    REMEDIATIONS = f"{PREFIX}_remediations_total"
    REMEDIATION_DURATION = f"{PREFIX}_remediation_duration_seconds"
    TIME_TO_RECOVERY = f"{PREFIX}_time_to_recovery_seconds"
    BREAKER_OPEN = f"{PREFIX}_breaker_open"
    PENDING_FINISHES = f"{PREFIX}_pending_finishes"
    RECOVERY_TIMESTAMP = f"{PREFIX}_recovery_timestamp_seconds"
    DETECTED_AFTER = f"{PREFIX}_detected_after_seconds"  # orphaned/overdue moment -> recovered

    ALL = (REQUESTS, ALERTS, REMEDIATIONS, REMEDIATION_DURATION, TIME_TO_RECOVERY, BREAKER_OPEN, PENDING_FINISHES,
           RECOVERY_TIMESTAMP, DETECTED_AFTER)


class ShadowMetric:
    """What the remediator publishes in shadow mode (--shadow): each execution either side acted on
    gets one verdict, per action of the contract's vocabulary (ACTIONS)."""

    PREFIX = "exec_watchdog_shadow"

    VERDICTS = f"{PREFIX}_verdicts_total"  # counter, labels verdict and action
    LEAD = f"{PREFIX}_lead_seconds"  # histogram by action: their write time minus our decision time

    ALL = (VERDICTS, LEAD)


# The verdicts of the shadow comparison: both ended it the same way, only we would have, only they
# did, or both did differently. The two one-sided verdicts are what a person must read.
AGREE = "agree"
OURS_ONLY = "ours_only"
THEIRS_ONLY = "theirs_only"
DIFFERENT = "different"
SHADOW_VERDICTS = (AGREE, OURS_ONLY, THEIRS_ONLY, DIFFERENT)
SHADOW_DISAGREEMENTS = (OURS_ONLY, THEIRS_ONLY)
