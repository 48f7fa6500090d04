"""promtool cases for the capacity-slot alerts (alerts/slot_rules.py), registered with alerts/rule_tests.py.

Both edges of every ``for``: silent one evaluation before, firing at it. Texts are written out,
as in rule_tests.py.
"""

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
from exec_watchdog.common.contract import ExporterMetric as exporter

AGENT = "agent-s"
EXECUTION = "slot-exec-1"
TTL = 3900  # a 3,600 s timeout + 300


def _slot() -> dict[str, str]:
    return {"job": contract.EXPORTER_JOB, "instance": EXPORTER_INSTANCE, "agent": AGENT, "execution_id": EXECUTION}


def _agent() -> dict[str, str]:
    return {"job": contract.EXPORTER_JOB, "instance": EXPORTER_INSTANCE, "agent": AGENT}


def _exporter() -> dict[str, str]:
    return {"job": contract.EXPORTER_JOB, "instance": EXPORTER_INSTANCE}


def _expired_alert(p: Profile, age: int) -> dict[str, Any]:
    return {
        "exp_labels": {**_slot(), "severity": "critical", "remediation": "reclaim_expired_slot"},
        "exp_annotations": {
            "summary": "A capacity slot has outlived its TTL.",
            "description": (
                f"The slot of execution {EXECUTION} on agent {AGENT} was acquired {humanize_duration(age)} ago, "
                "past its TTL (timeout + 300 s). The remediator asks the agent; unless the agent or a backend "
                "dispatcher still holds the run, it terminates it, marks it failed and releases the slot."),
            "runbook_url": runbook(p, contract.SLOT_EXPIRED),
        },
    }


def _unreachable_alert(p: Profile, age: int) -> dict[str, Any]:
    return {
        "exp_labels": {**_slot(), "severity": "critical", "remediation": "reclaim_slot_unreachable"},
        "exp_annotations": {
            "summary": "A capacity slot has outlived its TTL and its agent does not answer.",
            "description": (
                f"The slot of execution {EXECUTION} on agent {AGENT} was acquired {humanize_duration(age)} ago, "
                f"past its TTL, and the agent has not answered for {p.slot_unreachable_for}. The remediator marks "
                "the run failed and releases the slot."),
            "runbook_url": runbook(p, contract.SLOT_EXPIRED_AGENT_UNREACHABLE),
        },
    }


def _leaked_alert(p: Profile, age: int) -> dict[str, Any]:
    return {
        "exp_labels": {**_slot(), "severity": "warning", "remediation": "release_leaked_slot"},
        "exp_annotations": {
            "summary": "A capacity slot is held for an execution that has ended or does not exist.",
            "description": (
                f"The slot of execution {EXECUTION} on agent {AGENT}, acquired {humanize_duration(age)} ago, "
                "belongs to a missing or finished execution. The remediator releases exactly that slot."),
            "runbook_url": runbook(p, contract.SLOT_LEAKED),
        },
    }


def _slot_series(t: Timeline, start: int, until: int, *, leaked: int = 0, up: str = "", paused: str = "",
                 ) -> list[dict[str, str]]:
    n = t.steps(until)
    return [
        series(exporter.SLOT_AGE, _slot(), t.runtime(start, until)),
        series(exporter.SLOT_TTL, _slot(), f"{TTL}x{n}"),
        series(exporter.SLOT_LEAKED, _slot(), f"{leaked}x{n}"),
        series(exporter.AGENT_UP, _agent(), up or f"1x{n}"),
        series(exporter.SLOTS_PAUSED, _exporter(), paused or f"0x{n}"),
    ]


@case("ExecWatchdogSlotExpired fires slot_expired_for after a slot passes its TTL while its agent answers")
def slot_expired(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    start = TTL - 3 * t.step
    fires = t.fires(t.first_above(start, TTL), "slot_expired_for")
    return {"input_series": _slot_series(t, start, fires),
            "alert_rule_test": boundary(contract.SLOT_EXPIRED, fires, t.step, _expired_alert(p, start + fires))}


@case("ExecWatchdogSlotExpired stays silent while the agent does not answer, and for a leaked slot")
def slot_expired_not_for_unreachable_or_leaked(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    until = 20 * t.step
    down = _slot_series(t, TTL + t.step, until, up=f"0x{t.steps(until)}")
    leaked = [{**s, "series": s["series"].replace(EXECUTION, "slot-exec-2")}
              for s in _slot_series(t, TTL + t.step, until, leaked=1)[:3]]
    return {"input_series": down + leaked,
            "alert_rule_test": silent(contract.SLOT_EXPIRED, 0, until)}


@case("ExecWatchdogSlotExpired stays silent while governor:pause exists and fires slot_expired_for after it goes")
def slot_expired_paused(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    start = TTL + t.step
    fires = t.fires(4 * t.step, "slot_expired_for")
    return {"input_series": _slot_series(t, start, fires, paused=f"1x3 0x{t.steps(fires)}"),
            "alert_rule_test": boundary(contract.SLOT_EXPIRED, fires, t.step, _expired_alert(p, start + fires))}


@case("ExecWatchdogSlotExpiredAgentUnreachable fires slot_unreachable_for after the agent of an expired slot "
      "stops answering")
def slot_unreachable(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    start = TTL + t.step
    fires = t.fires(2 * t.step, "slot_unreachable_for")
    return {"input_series": _slot_series(t, start, fires, up=f"1x1 0x{t.steps(fires)}"),
            "alert_rule_test": boundary(contract.SLOT_EXPIRED_AGENT_UNREACHABLE, fires, t.step,
                                        _unreachable_alert(p, start + fires))}


@case("ExecWatchdogSlotExpiredAgentUnreachable starts slot_unreachable_for over when the agent answers once")
def slot_unreachable_flapping(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    start = TTL + t.step
    fires = t.fires(4 * t.step, "slot_unreachable_for")
    return {"input_series": _slot_series(t, start, fires, up=f"0 0 1 1 0x{t.steps(fires)}"),
            "alert_rule_test": boundary(contract.SLOT_EXPIRED_AGENT_UNREACHABLE, fires, t.step,
                                        _unreachable_alert(p, start + fires))}


@case("ExecWatchdogSlotExpiredAgentUnreachable stays silent for a slot within its TTL")
def slot_unreachable_young(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    until = 20 * t.step
    return {"input_series": _slot_series(t, TTL // 2, until, up=f"0x{t.steps(until)}"),
            "alert_rule_test": silent(contract.SLOT_EXPIRED_AGENT_UNREACHABLE, 0, until)}


@case("ExecWatchdogSlotLeaked fires slot_leaked_for after a leaked slot is slot_leak_min_age_seconds old")
def slot_leaked(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    fires = t.fires(t.first_above(0, p.slot_leak_min_age_seconds - 1), "slot_leaked_for")
    return {"input_series": _slot_series(t, 0, fires, leaked=1),
            "alert_rule_test": boundary(contract.SLOT_LEAKED, fires, t.step, _leaked_alert(p, fires))}


@case("ExecWatchdogSlotLeaked stays silent while governor:pause exists and for a slot whose row is live")
def slot_leaked_paused(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    until = 20 * t.step
    paused = _slot_series(t, 100, until, leaked=1, paused=f"1x{t.steps(until)}")
    live = [{**s, "series": s["series"].replace(EXECUTION, "slot-exec-2")}
            for s in _slot_series(t, 100, until, leaked=0)[:3]]
    return {"input_series": paused + live, "alert_rule_test": silent(contract.SLOT_LEAKED, 0, until)}
