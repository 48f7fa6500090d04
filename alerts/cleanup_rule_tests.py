"""promtool cases for the skipped and backlog rules (alerts/cleanup_rules.py), registered with
alerts/rule_tests.py: silent one evaluation before each edge, firing at it, with every label and
annotation written out."""

from __future__ import annotations

from typing import Any

from exec_watchdog.alerts.profiles import Profile
from exec_watchdog.alerts.rule_tests import (
    EXPORTER_INSTANCE,
    Timeline,
    boundary,
    case,
    humanize_duration,
    runbook,
    series,
    silent,
)
from exec_watchdog.common import contract
from exec_watchdog.common.contract import EXPIRE_BACKLOG, FAIL_STALE_ACTIVITY, FINALIZE_SKIPPED, REMEDIATION_LABEL
from exec_watchdog.common.contract import ExporterMetric as exporter

AGENT = "agent-a"
EXECUTION = "exec-9"
SCHEDULE = "sched-9"


def _row() -> dict[str, str]:
    return {"job": contract.EXPORTER_JOB, "instance": EXPORTER_INSTANCE, "agent": AGENT,
            "execution_id": EXECUTION, "schedule_id": SCHEDULE}


def _skipped_alert(p: Profile, age: int) -> dict[str, Any]:
    return {
        "exp_labels": {**_row(), "severity": "warning", REMEDIATION_LABEL: FINALIZE_SKIPPED},
        "exp_annotations": {
            "summary": "A skipped execution was never given a completion time.",
            "description": (
                f"Execution {EXECUTION} (schedule {SCHEDULE}) of agent {AGENT} was skipped {humanize_duration(age)} "
                "ago and has no completed_at. The remediator finalizes it as failed, as Trinity's cleanup does."),
            "runbook_url": runbook(p, contract.SKIPPED_UNFINALIZED),
        },
    }


def _backlog_alert(p: Profile, age: int) -> dict[str, Any]:
    return {
        "exp_labels": {**_row(), "severity": "warning", REMEDIATION_LABEL: EXPIRE_BACKLOG},
        "exp_annotations": {
            "summary": "A queued execution has waited longer than the backlog allows.",
            "description": (
                f"Execution {EXECUTION} (schedule {SCHEDULE}) of agent {AGENT} has been queued for "
                f"{humanize_duration(age)}, past the backlog age of {p.backlog_max_age_seconds}s. The "
                "remediator fails it, as Trinity's backlog expiry does."),
            "runbook_url": runbook(p, contract.BACKLOG_EXPIRED),
        },
    }


@case("ExecWatchdogSkippedExecutionUnfinalized fires skipped_unfinalized_for after an unfinalized skipped row "
      "appears, at any age")
def skipped_unfinalized(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    appears = 3 * t.step
    fires = t.fires(appears, "skipped_unfinalized_for")
    start = 5  # seconds old when first published
    return {
        "input_series": [series(exporter.SKIPPED_UNFINALIZED_AGE, _row(),
                                f"_x3 {start}+{t.step}x{t.steps(fires)}")],
        "alert_rule_test": boundary(contract.SKIPPED_UNFINALIZED, fires, t.step,
                                    _skipped_alert(p, start + fires - appears)),
    }


@case("ExecWatchdogSkippedExecutionUnfinalized stops once the row is finalized (its series is gone)")
def skipped_finalized(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    late = t.fires(0, "skipped_unfinalized_for") + 6 * t.step
    return {
        "input_series": [series(exporter.SKIPPED_UNFINALIZED_AGE, _row(), f"0+{t.step}x2 stale")],
        "alert_rule_test": silent(contract.SKIPPED_UNFINALIZED, late),
    }


@case("ExecWatchdogQueuedExecutionExpired fires backlog_expired_for after a queued row passes the backlog age")
def backlog_expired(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    start = max(0, p.backlog_max_age_seconds - 5 * t.step)
    fires = t.fires(t.first_above(start, p.backlog_max_age_seconds), "backlog_expired_for")
    return {
        "input_series": [series(exporter.QUEUED_AGE, _row(), t.runtime(start, fires))],
        "alert_rule_test": boundary(contract.BACKLOG_EXPIRED, fires, t.step, _backlog_alert(p, start + fires)),
    }


@case("ExecWatchdogQueuedExecutionExpired stays silent for a queued row at exactly the backlog age")
def backlog_at_the_age(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    late = t.fires(0, "backlog_expired_for") + 6 * t.step
    return {
        "input_series": [series(exporter.QUEUED_AGE, _row(), f"{p.backlog_max_age_seconds}x{t.steps(late)}")],
        "alert_rule_test": silent(contract.BACKLOG_EXPIRED, late),
    }


ACTIVITY = "6f1c0a2e-4b7d-4a51-9a0e-0c9d3f3a2b11"


def _activity() -> dict[str, str]:
    return {"job": contract.EXPORTER_JOB, "instance": EXPORTER_INSTANCE, "agent": AGENT,
            "activity_id": ACTIVITY, "activity_type": "schedule_start"}


def _activity_alert(p: Profile, age: int) -> dict[str, Any]:
    return {
        "exp_labels": {**_activity(), "severity": "warning", REMEDIATION_LABEL: FAIL_STALE_ACTIVITY},
        "exp_annotations": {
            "summary": "An activity has been in state started for longer than any run may take.",
            "description": (
                f"Activity {ACTIVITY} (schedule_start) of agent {AGENT} was started {humanize_duration(age)} ago "
                "and never closed, so Trinity's UI shows the agent busy. Past "
                f"{p.activity_stale_seconds}s the remediator marks it failed, as Trinity's cleanup does."),
            "runbook_url": runbook(p, contract.ACTIVITY_STALE),
        },
    }


@case("ExecWatchdogActivityStale fires activity_stale_for after a started activity passes activity_stale_seconds")
def activity_stale(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    start = max(0, p.activity_stale_seconds - 5 * t.step)
    fires = t.fires(t.first_above(start, p.activity_stale_seconds), "activity_stale_for")
    return {
        "input_series": [series(exporter.ACTIVITY_STARTED_AGE, _activity(), t.runtime(start, fires))],
        "alert_rule_test": boundary(contract.ACTIVITY_STALE, fires, t.step, _activity_alert(p, start + fires)),
    }


@case("ExecWatchdogActivityStale stays silent once the activity is closed before the bound (its series is gone)")
def activity_closed(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    late = t.fires(0, "activity_stale_for") + 6 * t.step
    start = p.activity_stale_seconds - 2 * t.step
    return {
        "input_series": [series(exporter.ACTIVITY_STARTED_AGE, _activity(), f"{start}+{t.step}x1 stale")],
        "alert_rule_test": silent(contract.ACTIVITY_STALE, late),
    }
