"""The promtool unit tests of the alert rules, one table for every profile.

Each case is a sentence and a function of the profile: it lays out input series on the
profile's evaluation interval and checks the boundary, silent one evaluation before the alert
should fire and firing at it, with every expected label and annotation. Boundaries are computed
from the profile's tunables, so the fast and production tests cannot drift from the rules.

The expected texts are written out here on purpose, not taken from ``rules.py``: a test that
reused the rule's template would pass whatever the template said.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from exec_watchdog.alerts.profiles import Profile
from exec_watchdog.common import contract
from exec_watchdog.common.contract import FAIL_ORPHAN, REMEDIATION_LABEL
from exec_watchdog.common.contract import ExporterMetric as exporter
from exec_watchdog.common.contract import RemediatorMetric as remediator

Case = Callable[[Profile], dict[str, Any]]
CASES: list[tuple[str, Case]] = []

AGENT = "agent-a"
EXECUTION = "exec-1"
SCHEDULE = "sched-1"
EXPORTER_INSTANCE = "exporter:9465"
REMEDIATOR_INSTANCE = "remediator:9464"


def case(name: str, applies: Callable[[Profile], bool] | None = None) -> Callable[[Case], Case]:
    """Register a case; ``applies`` leaves it out of the profiles it says no to."""
    def register(build: Case) -> Case:
        CASES.append((name, build))
        if applies is not None:
            ONLY[name] = applies
        return build
    return register


ONLY: dict[str, Callable[[Profile], bool]] = {}


def cases_for(profile: Profile) -> list[tuple[str, Case]]:
    return [(name, build) for name, build in CASES if name not in ONLY or ONLY[name](profile)]


def humanize_duration(seconds: int) -> str:
    """Prometheus's ``humanizeDuration`` for whole seconds ("1m 15s", "1h 0m 5s")."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m {secs}s"
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


class Timeline:
    """Evaluation times of one profile; input series are sampled once per evaluation."""

    def __init__(self, profile: Profile) -> None:
        step = profile.seconds("evaluation_interval")
        if step != int(step) or step < 1:
            raise ValueError("the rule tests need an evaluation_interval of whole seconds")
        self.profile = profile
        self.step = int(step)

    def first_above(self, start: int, threshold: int) -> int:
        """First evaluation at which a runtime that is ``start`` at 0s exceeds ``threshold``."""
        return max(0, (threshold - start) // self.step + 1) * self.step

    def fires(self, active_at: int, for_tunable: str) -> int:
        """When an alert whose condition holds from ``active_at`` on leaves pending."""
        waited = self.profile.seconds(for_tunable)
        return active_at + math.ceil(waited / self.step) * self.step

    def steps(self, until: int) -> int:
        """Samples a series needs to cover every evaluation up to ``until`` (and a few more)."""
        return until // self.step + 5

    def runtime(self, start: int, until: int) -> str:
        return f"{start}+{self.step}x{self.steps(until)}"


def _labels(selector: dict[str, str]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in selector.items())


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    return {"series": f"{name}{{{_labels(labels)}}}", "values": values}


def boundary(alertname: str, fires_at: int, step: int, alert: dict[str, Any]) -> list[dict[str, Any]]:
    """Silent one evaluation before ``fires_at`` (when there is one), firing at it."""
    checks: list[dict[str, Any]] = []
    if fires_at >= step:
        checks.append({"eval_time": f"{fires_at - step}s", "alertname": alertname, "exp_alerts": []})
    checks.append({"eval_time": f"{fires_at}s", "alertname": alertname, "exp_alerts": [alert]})
    return checks


def silent(alertname: str, *times: int) -> list[dict[str, Any]]:
    return [{"eval_time": f"{t}s", "alertname": alertname, "exp_alerts": []} for t in times]


def runbook(p: Profile, alertname: str) -> str:
    return f"{p.runbook_url}#{alertname.lower()}"


# --- Executions -------------------------------------------------------------------------------

def _execution(p: Profile) -> dict[str, str]:
    return {"job": contract.EXPORTER_JOB, "instance": EXPORTER_INSTANCE, "agent": AGENT,
            "execution_id": EXECUTION, "schedule_id": SCHEDULE}


def _orphan_alert(p: Profile, runtime: int, unknown_since: str = "unknown") -> dict[str, Any]:
    return {
        "exp_labels": {**_execution(p), "severity": "critical", REMEDIATION_LABEL: FAIL_ORPHAN},
        "exp_annotations": {
            "summary": "An execution is running in the database but unknown to its agent.",
            "description": (
                f"Agent {AGENT} answered and does not know execution {EXECUTION} (schedule {SCHEDULE}), "
                f"which the database has shown as running for {humanize_duration(runtime)}. The "
                "remediator re-verifies, marks it failed and releases its slot."
            ),
            "runbook_url": runbook(p, contract.ORPHANED),
            contract.UNKNOWN_SINCE_ANNOTATION: unknown_since,
        },
    }


def _overdue_alert(p: Profile, runtime: int) -> dict[str, Any]:
    return {
        "exp_labels": {**_execution(p), "severity": "critical", "remediation": "terminate_overdue"},
        "exp_annotations": {
            "summary": "An execution has run past its timeout.",
            "description": (
                f"Execution {EXECUTION} (schedule {SCHEDULE}) on agent {AGENT} has been running for "
                f"{humanize_duration(runtime)}, past its timeout (default "
                f"{p.overdue_default_timeout_seconds}s when none is set). The remediator terminates "
                "it on the agent, marks it failed and releases its slot."
            ),
            "runbook_url": runbook(p, contract.OVERDUE),
        },
    }


@case("ExecWatchdogExecutionOrphaned fires orphan_for after an unknown execution passes the minimum age")
def orphan_young_execution(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    fires = t.fires(t.first_above(0, p.orphan_min_age_seconds), "orphan_for")
    return {
        "input_series": [
            series(exporter.EXECUTION_RUNTIME, _execution(p), t.runtime(0, fires)),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(p), f"0x{t.steps(fires)}"),
        ],
        "alert_rule_test": boundary(contract.ORPHANED, fires, t.step, _orphan_alert(p, fires)),
    }


@case("ExecWatchdogExecutionOrphaned carries the first scrape that found its execution unknown, from the "
      "exporter's gauge")
def orphan_unknown_since(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    start = p.orphan_min_age_seconds + 10 * t.step
    fires = t.fires(0, "orphan_for")
    first_unknown = 1_764_000_000.25
    return {
        "input_series": [
            series(exporter.EXECUTION_RUNTIME, _execution(p), t.runtime(start, fires)),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(p), f"0x{t.steps(fires)}"),
            series(exporter.EXECUTION_UNKNOWN_SINCE, _execution(p), f"{first_unknown}x{t.steps(fires)}"),
        ],
        "alert_rule_test": boundary(contract.ORPHANED, fires, t.step,
                                    _orphan_alert(p, start + fires, f"{first_unknown:.3f}")),
    }


@case("ExecWatchdogExecutionOrphaned fires orphan_for after the agent stops knowing an old execution")
def orphan_forgotten(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    start = p.orphan_min_age_seconds + 10 * t.step
    fires = t.fires(4 * t.step, "orphan_for")
    return {
        "input_series": [
            series(exporter.EXECUTION_RUNTIME, _execution(p), t.runtime(start, fires)),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(p), f"1x3 0x{t.steps(fires)}"),
        ],
        "alert_rule_test": boundary(contract.ORPHANED, fires, t.step, _orphan_alert(p, start + fires)),
    }


@case("ExecWatchdogExecutionOrphaned starts orphan_for over when the agent knows the execution again")
def orphan_flapping(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    start = p.orphan_min_age_seconds + 10 * t.step
    fires = t.fires(2 * t.step, "orphan_for")
    return {
        "input_series": [
            series(exporter.EXECUTION_RUNTIME, _execution(p), t.runtime(start, fires)),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(p), f"0 1 0x{t.steps(fires)}"),
        ],
        "alert_rule_test": boundary(contract.ORPHANED, fires, t.step, _orphan_alert(p, start + fires)),
    }


@case("ExecWatchdogExecutionOrphaned stays silent when every other scrape misses the execution (a terminate "
      "draining, a slow or lost poll)")
def orphan_single_misses(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    start = p.orphan_min_age_seconds + 10 * t.step
    late = t.fires(0, "orphan_for") + 10 * t.step
    return {
        "input_series": [
            series(exporter.EXECUTION_RUNTIME, _execution(p), t.runtime(start, late)),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(p), " ".join(["0 1"] * t.steps(late))),
        ],
        "alert_rule_test": silent(contract.ORPHANED, *range(0, late + 1, t.step)),
    }


@case("ExecWatchdogExecutionOrphaned starts orphan_for over after a lost scrape")
def orphan_lost_scrape(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    start = p.orphan_min_age_seconds + 10 * t.step
    fires = t.fires(2 * t.step, "orphan_for")
    runtime = f"{start} stale {start + 2 * t.step}+{t.step}x{t.steps(fires)}"
    return {
        "input_series": [
            series(exporter.EXECUTION_RUNTIME, _execution(p), runtime),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(p), f"0 stale 0x{t.steps(fires)}"),
        ],
        "alert_rule_test": boundary(contract.ORPHANED, fires, t.step, _orphan_alert(p, start + fires)),
    }


@case("ExecWatchdogExecutionOrphaned stays silent while the agent is unreachable and agent_known is absent")
def orphan_agent_unreachable(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    start = p.orphan_min_age_seconds + 10 * t.step
    late = t.fires(0, "orphan_for") + 10 * t.step
    return {
        "input_series": [
            series(exporter.EXECUTION_RUNTIME, _execution(p), t.runtime(start, late)),
            series(exporter.AGENT_UP, {"job": contract.EXPORTER_JOB, "instance": EXPORTER_INSTANCE, "agent": AGENT},
                   f"0x{t.steps(late)}"),
        ],
        "alert_rule_test": silent(contract.ORPHANED, 0, late),
    }


@case("ExecWatchdogExecutionOrphaned stops at the first scrape after the agent becomes unreachable")
def orphan_then_unreachable(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    start = p.orphan_min_age_seconds + 10 * t.step
    fires = t.fires(0, "orphan_for")
    known_steps = fires // t.step  # agent_known is 0 up to `fires`, then the series goes stale
    return {
        "input_series": [
            series(exporter.EXECUTION_RUNTIME, _execution(p), t.runtime(start, fires)),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(p), f"0x{known_steps} stale"),
        ],
        "alert_rule_test": [
            *boundary(contract.ORPHANED, fires, t.step, _orphan_alert(p, start + fires)),
            *silent(contract.ORPHANED, fires + t.step),
        ],
    }


@case("ExecWatchdogExecutionOrphaned stays silent while the agent knows the execution")
def orphan_known(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    start = p.orphan_min_age_seconds + 10 * t.step
    late = t.fires(0, "orphan_for") + 10 * t.step
    return {
        "input_series": [
            series(exporter.EXECUTION_RUNTIME, _execution(p), t.runtime(start, late)),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(p), f"1x{t.steps(late)}"),
        ],
        "alert_rule_test": silent(contract.ORPHANED, 0, late),
    }


@case("ExecWatchdogExecutionOverdue fires overdue_for after an execution passes its own timeout")
def overdue_own_timeout(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    timeout = 10 * t.step
    fires = t.fires(t.first_above(0, timeout), "overdue_for")
    return {
        "input_series": [
            series(exporter.EXECUTION_RUNTIME, _execution(p), t.runtime(0, fires)),
            series(exporter.EXECUTION_TIMEOUT, _execution(p), f"{timeout}x{t.steps(fires)}"),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(p), f"1x{t.steps(fires)}"),
        ],
        "alert_rule_test": boundary(contract.OVERDUE, fires, t.step, _overdue_alert(p, fires)),
    }


@case("ExecWatchdogExecutionOverdue uses the default timeout for an execution that has none")
def overdue_default_timeout(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    default = p.overdue_default_timeout_seconds
    start = max(0, default - 5 * t.step)
    fires = t.fires(t.first_above(start, default), "overdue_for")
    return {
        "input_series": [
            series(exporter.EXECUTION_RUNTIME, _execution(p), t.runtime(start, fires)),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(p), f"1x{t.steps(fires)}"),
        ],
        "alert_rule_test": boundary(contract.OVERDUE, fires, t.step, _overdue_alert(p, start + fires)),
    }


@case("ExecWatchdogExecutionOverdue lets a timeout longer than the default win")
def overdue_long_timeout(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    timeout = 2 * p.overdue_default_timeout_seconds
    start = timeout - 5 * t.step  # already far past the default
    fires = t.fires(t.first_above(start, timeout), "overdue_for")
    return {
        "input_series": [
            series(exporter.EXECUTION_RUNTIME, _execution(p), t.runtime(start, fires)),
            series(exporter.EXECUTION_TIMEOUT, _execution(p), f"{timeout}x{t.steps(fires)}"),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(p), f"1x{t.steps(fires)}"),
        ],
        "alert_rule_test": [
            *silent(contract.OVERDUE, 0),
            *boundary(contract.OVERDUE, fires, t.step, _overdue_alert(p, start + fires)),
        ],
    }


@case("ExecWatchdogExecutionOverdue leaves an execution its agent does not know to the orphan rule")
def overdue_unknown(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    timeout = 10 * t.step
    late = t.fires(t.first_above(0, timeout), "overdue_for") + 10 * t.step
    return {
        "input_series": [
            series(exporter.EXECUTION_RUNTIME, _execution(p), t.runtime(0, late)),
            series(exporter.EXECUTION_TIMEOUT, _execution(p), f"{timeout}x{t.steps(late)}"),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(p), f"0x{t.steps(late)}"),
        ],
        "alert_rule_test": silent(contract.OVERDUE, late),
    }


@case("ExecWatchdogExecutionOverdue stays silent while the agent is unreachable and agent_known is absent")
def overdue_agent_unreachable(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    timeout = 10 * t.step
    late = t.fires(t.first_above(0, timeout), "overdue_for") + 10 * t.step
    return {
        "input_series": [
            series(exporter.EXECUTION_RUNTIME, _execution(p), t.runtime(0, late)),
            series(exporter.EXECUTION_TIMEOUT, _execution(p), f"{timeout}x{t.steps(late)}"),
        ],
        "alert_rule_test": silent(contract.OVERDUE, late),
    }


@case("ExecWatchdogExecutionOrphaned stays silent while a backend dispatcher still holds the execution")
def orphan_in_flight(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    start = p.orphan_min_age_seconds + 10 * t.step
    late = t.fires(0, "orphan_for") + 10 * t.step
    return {
        "input_series": [
            series(exporter.EXECUTION_RUNTIME, _execution(p), t.runtime(start, late)),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(p), f"0x{t.steps(late)}"),
            series(exporter.EXECUTION_DISPATCH_INFLIGHT, _execution(p), f"1x{t.steps(late)}"),
        ],
        "alert_rule_test": silent(contract.ORPHANED, 0, late),
    }


@case("ExecWatchdogExecutionOrphaned fires orphan_for after the in-flight marker lapses")
def orphan_marker_lapsed(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    start = p.orphan_min_age_seconds + 10 * t.step
    fires = t.fires(4 * t.step, "orphan_for")
    return {
        "input_series": [
            series(exporter.EXECUTION_RUNTIME, _execution(p), t.runtime(start, fires)),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(p), f"0x{t.steps(fires)}"),
            series(exporter.EXECUTION_DISPATCH_INFLIGHT, _execution(p), f"1x3 0x{t.steps(fires)}"),
        ],
        "alert_rule_test": boundary(contract.ORPHANED, fires, t.step, _orphan_alert(p, start + fires)),
    }


def _completed_alert(p: Profile, runtime: int) -> dict[str, Any]:
    return {
        "exp_labels": {**_execution(p), "severity": "critical", "remediation": "claim_result"},
        "exp_annotations": {
            "summary": "An execution finished on its agent but the database still shows it running.",
            "description": (
                f"Agent {AGENT} lists execution {EXECUTION} (schedule {SCHEDULE}) as recently completed, yet "
                f"the database has shown it as running for {humanize_duration(runtime)}. The remediator "
                "claims the result the agent kept, writes it and releases its slot."
            ),
            "runbook_url": runbook(p, contract.COMPLETED_UNREPORTED),
        },
    }


@case("ExecWatchdogExecutionCompletedUnreported fires completed_unreported_for after the agent lists the "
      "execution as recently completed")
def completed_unreported(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    start = 10 * t.step
    fires = t.fires(4 * t.step, "completed_unreported_for")
    return {
        "input_series": [
            series(exporter.EXECUTION_RUNTIME, _execution(p), t.runtime(start, fires)),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(p), f"1x{t.steps(fires)}"),
            series(exporter.EXECUTION_RECENTLY_COMPLETED, _execution(p), f"0x3 1x{t.steps(fires)}"),
        ],
        "alert_rule_test": boundary(contract.COMPLETED_UNREPORTED, fires, t.step, _completed_alert(p, start + fires)),
    }


@case("ExecWatchdogExecutionCompletedUnreported stays silent while the agent is unreachable")
def completed_agent_unreachable(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    late = t.fires(0, "completed_unreported_for") + 10 * t.step
    return {
        "input_series": [
            series(exporter.EXECUTION_RUNTIME, _execution(p), t.runtime(0, late)),
            series(exporter.AGENT_UP, {"job": contract.EXPORTER_JOB, "instance": EXPORTER_INSTANCE, "agent": AGENT},
                   f"0x{t.steps(late)}"),
        ],
        "alert_rule_test": silent(contract.COMPLETED_UNREPORTED, 0, late),
    }


@case("ExecWatchdogExecutionOverdue never terminates an execution the agent lists as recently completed")
def overdue_recently_completed(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    timeout = 10 * t.step
    late = t.fires(t.first_above(0, timeout), "overdue_for") + 10 * t.step
    return {
        "input_series": [
            series(exporter.EXECUTION_RUNTIME, _execution(p), t.runtime(0, late)),
            series(exporter.EXECUTION_TIMEOUT, _execution(p), f"{timeout}x{t.steps(late)}"),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(p), f"1x{t.steps(late)}"),
            series(exporter.EXECUTION_RECENTLY_COMPLETED, _execution(p), f"1x{t.steps(late)}"),
        ],
        "alert_rule_test": silent(contract.OVERDUE, late),
    }


@case("ExecWatchdogExecutionStuck warns stuck_for after an execution passes the stuck threshold")
def stuck(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    start = max(0, p.stuck_threshold_seconds - 5 * t.step)
    fires = t.fires(t.first_above(start, p.stuck_threshold_seconds), "stuck_for")
    alert = {
        "exp_labels": {**_execution(p), "severity": "warning"},
        "exp_annotations": {
            "summary": "An execution has been running for unusually long.",
            "description": (
                f"Execution {EXECUTION} (schedule {SCHEDULE}) on agent {AGENT} has been running for "
                f"{humanize_duration(start + fires)}. The watchdog does nothing about it until it is "
                "orphaned or overdue."
            ),
            "runbook_url": runbook(p, contract.STUCK),
        },
    }
    return {
        "input_series": [
            series(exporter.EXECUTION_RUNTIME, _execution(p), t.runtime(start, fires)),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(p), f"1x{t.steps(fires)}"),
        ],
        "alert_rule_test": boundary(contract.STUCK, fires, t.step, alert),
    }


# --- The pipeline itself ----------------------------------------------------------------------

@case("ExecWatchdogAgentUnreachable warns once an agent has not answered for agent_unreachable_for")
def agent_unreachable(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    fires = t.fires(4 * t.step, "agent_unreachable_for")
    agent = {"job": contract.EXPORTER_JOB, "instance": EXPORTER_INSTANCE, "agent": AGENT}
    alert = {
        "exp_labels": {**agent, "severity": "warning"},
        "exp_annotations": {
            "summary": "An agent does not answer the exporter.",
            "description": (
                f"Agent {AGENT} has not answered GET /api/executions/running. Its executions can be "
                "neither verified nor recovered: the watchdog leaves them alone until it answers, except runs "
                "past their stale window or without a session, which end as Trinity's cleanup ends them."
            ),
            "runbook_url": runbook(p, contract.AGENT_UNREACHABLE),
        },
    }
    return {
        "input_series": [series(exporter.AGENT_UP, agent, f"1x3 0x{t.steps(fires)}")],
        "alert_rule_test": boundary(contract.AGENT_UNREACHABLE, fires, t.step, alert),
    }


def _exporter_down_alert(p: Profile, labels: dict[str, str], where: str) -> dict[str, Any]:
    return {
        "exp_labels": {**labels, "severity": "critical"},
        "exp_annotations": {
            "summary": "Prometheus is not scraping the exec-watchdog exporter.",
            "description": (
                f"Job {contract.EXPORTER_JOB}{where} has no successful scrape (target down or not configured). "
                "No agent or execution is watched meanwhile."
            ),
            "runbook_url": runbook(p, contract.EXPORTER_DOWN),
        },
    }


@case("ExecWatchdogExporterDown pages once the exporter target has been down for exporter_down_for")
def exporter_down(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    fires = t.fires(4 * t.step, "exporter_down_for")
    target = {"job": contract.EXPORTER_JOB, "instance": EXPORTER_INSTANCE}
    return {
        "input_series": [series("up", target, f"1x3 0x{t.steps(fires)}")],
        "alert_rule_test": boundary(contract.EXPORTER_DOWN, fires, t.step,
                                    _exporter_down_alert(p, target, f" at {EXPORTER_INSTANCE}")),
    }


@case("ExecWatchdogExporterDown pages when Prometheus has no exporter target at all")
def exporter_missing(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    fires = t.fires(0, "exporter_down_for")
    other = {"job": contract.REMEDIATOR_JOB, "instance": REMEDIATOR_INSTANCE}
    return {
        "input_series": [series("up", other, f"1x{t.steps(fires)}")],
        "alert_rule_test": boundary(contract.EXPORTER_DOWN, fires, t.step,
                                    _exporter_down_alert(p, {"job": contract.EXPORTER_JOB}, "")),
    }


@case("ExecWatchdogDatabaseUnreachable pages once the executions query has failed for database_unreachable_for")
def database_unreachable(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    fires = t.fires(4 * t.step, "database_unreachable_for")
    target = {"job": contract.EXPORTER_JOB, "instance": EXPORTER_INSTANCE}
    alert = {
        "exp_labels": {**target, "severity": "critical"},
        "exp_annotations": {
            "summary": "The exporter cannot read the executions table.",
            "description": (
                f"Exporter {EXPORTER_INSTANCE} failed its executions query. No agent or execution is "
                "watched meanwhile."
            ),
            "runbook_url": runbook(p, contract.DATABASE_UNREACHABLE),
        },
    }
    return {
        "input_series": [series(exporter.DATABASE_UP, target, f"1x3 0x{t.steps(fires)}")],
        "alert_rule_test": boundary(contract.DATABASE_UNREACHABLE, fires, t.step, alert),
    }


def _remediator(p: Profile) -> dict[str, str]:
    return {"job": contract.REMEDIATOR_JOB, "instance": REMEDIATOR_INSTANCE}


def _remediator_failing_alert(p: Profile, reason: str) -> dict[str, Any]:
    return {
        "exp_labels": {**_remediator(p), "reason": reason, "severity": "critical"},
        "exp_annotations": {
            "summary": "The remediator keeps failing to finish remediations.",
            "description": (
                f"Remediator {contract.REMEDIATOR_JOB} at {REMEDIATOR_INSTANCE} is failing ({reason}). Orphaned "
                "and overdue executions stay stuck until it recovers; Alertmanager keeps retrying."
            ),
            "runbook_url": runbook(p, contract.REMEDIATOR_FAILING),
        },
    }


@case("ExecWatchdogRemediatorFailing pages when the webhook has answered 5xx for remediator_failing_for")
def remediator_5xx(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    fires = t.fires(t.step, "remediator_failing_for")  # rate() needs a second sample
    n = t.steps(fires)
    return {
        "input_series": [
            series("up", _remediator(p), f"1x{n}"),
            series(remediator.REQUESTS, {**_remediator(p), "code": "503"}, f"0+1x{n}"),
        ],
        "alert_rule_test": boundary(contract.REMEDIATOR_FAILING, fires, t.step,
                                    _remediator_failing_alert(p, "webhook_errors")),
    }


@case("ExecWatchdogRemediatorFailing pages when remediations have been retried for remediator_failing_for")
def remediator_retrying(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    fires = t.fires(t.step, "remediator_failing_for")
    n = t.steps(fires)
    retries = {**_remediator(p), "action": FAIL_ORPHAN, "outcome": "retry"}
    return {
        "input_series": [
            series("up", _remediator(p), f"1x{n}"),
            series(remediator.REMEDIATIONS, retries, f"0+1x{n}"),
        ],
        "alert_rule_test": boundary(contract.REMEDIATOR_FAILING, fires, t.step,
                                    _remediator_failing_alert(p, "remediations_retrying")),
    }


@case("ExecWatchdogRemediatorFailing pages when the remediator target has been down for remediator_failing_for")
def remediator_down(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    fires = t.fires(4 * t.step, "remediator_failing_for")
    return {
        "input_series": [series("up", _remediator(p), f"1x3 0x{t.steps(fires)}")],
        "alert_rule_test": boundary(contract.REMEDIATOR_FAILING, fires, t.step,
                                    _remediator_failing_alert(p, "target_down")),
    }


@case("ExecWatchdogRemediatorFailing stays silent while the webhook answers 2xx and old 5xx stay old")
def remediator_healthy(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    late = t.fires(t.step, "remediator_failing_for") + 10 * t.step
    n = t.steps(late)
    return {
        "input_series": [
            series("up", _remediator(p), f"1x{n}"),
            series(remediator.REQUESTS, {**_remediator(p), "code": "200"}, f"0+1x{n}"),
            series(remediator.REQUESTS, {**_remediator(p), "code": "500"}, f"2x{n}"),
            series(remediator.REMEDIATIONS, {**_remediator(p), "action": FAIL_ORPHAN, "outcome": "retry"},
                   f"3x{n}"),
            series(remediator.REMEDIATIONS, {**_remediator(p), "action": FAIL_ORPHAN, "outcome": "recovered"},
                   f"0+1x{n}"),
        ],
        "alert_rule_test": silent(contract.REMEDIATOR_FAILING, late),
    }


@case("ExecWatchdogRemediatorBreakerOpen pages once the breaker has been open for breaker_open_for")
def breaker_open(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    fires = t.fires(4 * t.step, "breaker_open_for")
    alert = {
        "exp_labels": {**_remediator(p), "severity": "critical"},
        "exp_annotations": {
            "summary": "The remediator's breaker has stopped all remediation.",
            "description": (
                f"Remediator {REMEDIATOR_INSTANCE} saw too many remediations at once and stopped acting. "
                "Orphaned and overdue executions are left alone until an operator checks and it closes."
            ),
            "runbook_url": runbook(p, contract.BREAKER_OPEN),
        },
    }
    return {
        "input_series": [series(remediator.BREAKER_OPEN, _remediator(p), f"0x3 1x{t.steps(fires)}")],
        "alert_rule_test": boundary(contract.BREAKER_OPEN, fires, t.step, alert),
    }


@case("ExecWatchdogHeartbeat fires from the first evaluation, with no metrics at all")
def heartbeat(p: Profile) -> dict[str, Any]:
    step = Timeline(p).step
    alert = {
        "exp_labels": {"severity": "none"},
        "exp_annotations": {
            "summary": "Always firing, to prove that alerts flow from Prometheus through Alertmanager.",
            "description": (
                "This alert always fires. If its receiver stops hearing it, part of Prometheus, "
                "Alertmanager or the notification path is broken and no other alert would arrive either."
            ),
            "runbook_url": runbook(p, contract.HEARTBEAT),
        },
    }
    return {
        "input_series": [],
        "alert_rule_test": [
            {"eval_time": f"{t}s", "alertname": contract.HEARTBEAT, "exp_alerts": [alert]}
            for t in (0, 20 * step)
        ],
    }


# The timeout-advice, slot, cleanup-row and sweep (stale, no session, fleet guard) cases live beside
# their rules; importing them registers them here.
from exec_watchdog.alerts import (  # noqa: E402, F401
    cleanup_rule_tests,
    shadow_rule_tests,
    slot_rule_tests,
    sweep_rule_tests,
    timeout_rule_tests,
)


def promtool_groups(profile: Profile) -> list[dict[str, Any]]:
    """Every case for ``profile``, as promtool test groups."""
    interval = profile.evaluation_interval
    return [{"name": name, "interval": interval, **build(profile)} for name, build in cases_for(profile)]


def promtool_file(profile: Profile, rule_file: str, groups: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A promtool unit-test file for ``rule_file`` (a path relative to the test file)."""
    return {
        "rule_files": [rule_file],
        "evaluation_interval": profile.evaluation_interval,
        "tests": promtool_groups(profile) if groups is None else groups,
    }
