"""promtool cases for Trinity's cleanup sweeps (stale, no session) and the fleet guard
(alerts/sweep_rules.py), registered with alerts/rule_tests.py: each edge silent one
evaluation before it and firing at it. Texts are written out, as in rule_tests.py.
"""

from __future__ import annotations

from typing import Any

from exec_watchdog.alerts.profiles import Profile
from exec_watchdog.alerts.rule_tests import (
    AGENT,
    EXECUTION,
    EXPORTER_INSTANCE,
    SCHEDULE,
    Timeline,
    boundary,
    case,
    humanize_duration,
    runbook,
    series,
    silent,
)
from exec_watchdog.common import contract
from exec_watchdog.common.contract import REMEDIATION_LABEL
from exec_watchdog.common.contract import ExporterMetric as exporter


def _execution() -> dict[str, str]:
    return {"job": contract.EXPORTER_JOB, "instance": EXPORTER_INSTANCE, "agent": AGENT,
            "execution_id": EXECUTION, "schedule_id": SCHEDULE}


def _overrun(window: str) -> dict[str, str]:
    return {**_execution(), "window": window}


def _agent(name: str = AGENT) -> dict[str, str]:
    return {"job": contract.EXPORTER_JOB, "instance": EXPORTER_INSTANCE, "agent": name}


def _stale_alert(p: Profile, window: str) -> dict[str, Any]:
    return {
        "exp_labels": {**_overrun(window), "severity": "critical", REMEDIATION_LABEL: "fail_stale"},
        "exp_annotations": {
            "summary": "An execution is past its stale window and its agent does not list it.",
            "description": (
                f"Execution {EXECUTION} (schedule {SCHEDULE}) on agent {AGENT} is past its stale window "
                f"({window} window) and the agent has not listed it (it answered without it or did not "
                "answer). The remediator re-verifies and marks it failed with Trinity's stale text."
            ),
            "runbook_url": runbook(p, contract.STALE),
        },
    }


@case("ExecWatchdogExecutionStale fires stale_for after a run its agent answered without passes the agent's "
      "timeout plus the stale grace")
def stale_unlisted(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    fires = t.fires(t.first_above(0, p.stale_grace_seconds), "stale_for")
    return {
        "input_series": [
            series(exporter.EXECUTION_STALE_OVERRUN, _overrun("agent"), t.runtime(0, fires)),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(), f"0x{t.steps(fires)}"),
        ],
        "alert_rule_test": boundary(contract.STALE, fires, t.step, _stale_alert(p, "agent")),
    }


@case("ExecWatchdogExecutionStale fires stale_for after the stale window when the agent never answers")
def stale_unreachable(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    fires = t.fires(t.first_above(0, p.stale_grace_seconds), "stale_for")
    return {
        "input_series": [
            series(exporter.EXECUTION_STALE_OVERRUN, _overrun("agent"), t.runtime(0, fires)),
            series(exporter.AGENT_UP, _agent(), f"0x{t.steps(fires)}"),
        ],
        "alert_rule_test": boundary(contract.STALE, fires, t.step, _stale_alert(p, "agent")),
    }


@case("ExecWatchdogExecutionStale uses the flat window for a run of an unknown or soft-deleted agent")
def stale_unowned(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    start = max(0, p.stale_unowned_seconds - 5 * t.step)
    fires = t.fires(t.first_above(start, p.stale_unowned_seconds), "stale_for")
    return {
        "input_series": [series(exporter.EXECUTION_STALE_OVERRUN, _overrun("unowned"), t.runtime(start, fires))],
        "alert_rule_test": boundary(contract.STALE, fires, t.step, _stale_alert(p, "unowned")),
    }


@case("ExecWatchdogExecutionStale leaves a run its agent still lists to the overdue rule")
def stale_listed(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    late = t.fires(t.first_above(0, p.stale_grace_seconds), "stale_for") + 10 * t.step
    return {
        "input_series": [
            series(exporter.EXECUTION_STALE_OVERRUN, _overrun("agent"), t.runtime(0, late)),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(), f"1x{t.steps(late)}"),
        ],
        "alert_rule_test": silent(contract.STALE, late),
    }


@case("ExecWatchdogExecutionStale stays silent while a backend dispatcher still holds the run")
def stale_in_flight(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    late = t.fires(t.first_above(0, p.stale_grace_seconds), "stale_for") + 10 * t.step
    return {
        "input_series": [
            series(exporter.EXECUTION_STALE_OVERRUN, _overrun("agent"), t.runtime(0, late)),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(), f"0x{t.steps(late)}"),
            series(exporter.EXECUTION_DISPATCH_INFLIGHT, _execution(), f"1x{t.steps(late)}"),
        ],
        "alert_rule_test": silent(contract.STALE, late),
    }


@case("ExecWatchdogExecutionStale starts stale_for over when the agent lists the run again for one scrape")
def stale_listed_once(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    start = p.stale_grace_seconds + 10 * t.step
    fires = t.fires(2 * t.step, "stale_for")
    return {
        "input_series": [
            series(exporter.EXECUTION_STALE_OVERRUN, _overrun("agent"), t.runtime(start, fires)),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(), f"0 1 0x{t.steps(fires)}"),
        ],
        "alert_rule_test": boundary(contract.STALE, fires, t.step, _stale_alert(p, "agent")),
    }


def _no_session_alert(p: Profile, runtime: int) -> dict[str, Any]:
    return {
        "exp_labels": {**_execution(), "severity": "critical", REMEDIATION_LABEL: "fail_no_session"},
        "exp_annotations": {
            "summary": "An execution never got a session and its agent does not answer.",
            "description": (
                f"Execution {EXECUTION} (schedule {SCHEDULE}) on agent {AGENT} has no Claude session after "
                f"{humanize_duration(runtime)} and the agent has not answered about it. The remediator "
                "re-verifies and marks it failed with Trinity's silent launch failure text."
            ),
            "runbook_url": runbook(p, contract.NO_SESSION),
        },
    }


@case("ExecWatchdogExecutionNoSession fires no_session_for after a sessionless run passes the minimum age "
      "while its agent does not answer")
def no_session_unreachable(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    fires = t.fires(t.first_above(0, p.no_session_min_age_seconds), "no_session_for")
    return {
        "input_series": [
            series(exporter.EXECUTION_SESSIONLESS_RUNTIME, _execution(), t.runtime(0, fires)),
            series(exporter.AGENT_UP, _agent(), f"0x{t.steps(fires)}"),
        ],
        "alert_rule_test": boundary(contract.NO_SESSION, fires, t.step, _no_session_alert(p, fires)),
    }


@case("ExecWatchdogExecutionNoSession leaves a sessionless run its agent answered about to the orphan and "
      "overdue rules")
def no_session_answered(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    late = t.fires(t.first_above(0, p.no_session_min_age_seconds), "no_session_for") + 10 * t.step
    return {
        "input_series": [
            series(exporter.EXECUTION_SESSIONLESS_RUNTIME, _execution(), t.runtime(0, late)),
            series(exporter.EXECUTION_AGENT_KNOWN, _execution(), " ".join(["0 1"] * t.steps(late))),
        ],
        "alert_rule_test": silent(contract.NO_SESSION, late),
    }


def _fleet(p: Profile, down: int, up: int, until: int, down_from: int = 0) -> list[dict[str, str]]:
    """``down`` agents answering for ``down_from`` evaluations and then not, ``up`` agents always answering."""
    t = Timeline(p)
    downs = [series(exporter.AGENT_UP, _agent(f"down-{n}"),
                    f"1x{down_from - 1} 0x{t.steps(until)}" if down_from else f"0x{t.steps(until)}")
             for n in range(down)]
    ups = [series(exporter.AGENT_UP, _agent(f"up-{n}"), f"1x{t.steps(until)}") for n in range(up)]
    return downs + ups


def _fleet_alert(p: Profile, down: int) -> dict[str, Any]:
    return {
        "exp_labels": {"severity": "critical"},
        "exp_annotations": {
            "summary": "Much of the fleet is unreachable at once: the watchdog's own network is the likely fault.",
            "description": (
                f"{down} agents do not answer the exporter (at least {p.fleet_unreachable_percent}% of the fleet "
                f"and {p.fleet_unreachable_min_agents} agents). Every remediation that acts on unreachable agents "
                "is held until the fleet answers again: check the watchdog's network before the platform."
            ),
            "runbook_url": runbook(p, contract.FLEET_UNREACHABLE),
        },
    }


def _at_share(p: Profile, down: int) -> int:
    """The most answering agents that still leave ``down`` at the fleet guard's share."""
    return down * 100 // p.fleet_unreachable_percent - down


@case("ExecWatchdogFleetUnreachable pages fleet_unreachable_for after the share and the count of unreachable "
      "agents are reached")
def fleet_unreachable(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    down = p.fleet_unreachable_min_agents
    fires = t.fires(4 * t.step, "fleet_unreachable_for")
    return {
        "input_series": _fleet(p, down, _at_share(p, down), fires, down_from=4),
        "alert_rule_test": boundary(contract.FLEET_UNREACHABLE, fires, t.step, _fleet_alert(p, down)),
    }


@case("ExecWatchdogFleetUnreachable stays silent with one agent fewer than the minimum unreachable")
def fleet_too_few(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    down = p.fleet_unreachable_min_agents - 1
    late = t.fires(0, "fleet_unreachable_for") + 10 * t.step
    return {
        "input_series": _fleet(p, down, 0, late),
        "alert_rule_test": silent(contract.FLEET_UNREACHABLE, 0, late),
    }


@case("ExecWatchdogFleetUnreachable stays silent with one answering agent more than the share allows")
def fleet_below_share(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    down = p.fleet_unreachable_min_agents
    late = t.fires(0, "fleet_unreachable_for") + 10 * t.step
    up = _at_share(p, down) + 1
    if down * 100 < p.fleet_unreachable_percent * (down + up):  # one more is indeed below the share
        return {"input_series": _fleet(p, down, up, late),
                "alert_rule_test": silent(contract.FLEET_UNREACHABLE, 0, late)}
    raise ValueError("fleet_unreachable_percent leaves no fleet below the share")
