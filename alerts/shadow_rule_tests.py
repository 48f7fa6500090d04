"""promtool cases for the shadow-mode alert (alerts/shadow_rules.py), registered with
alerts/rule_tests.py.

Both branches of the rule get their onset edge (silent one evaluation before, firing at it) and
the evaluation at which the window has moved past the last disagreement (silent again). Texts are
written out, as in rule_tests.py.
"""

from __future__ import annotations

from typing import Any

from exec_watchdog.alerts.profiles import Profile
from exec_watchdog.alerts.rule_tests import REMEDIATOR_INSTANCE, Timeline, boundary, case, runbook, series, silent
from exec_watchdog.common import contract
from exec_watchdog.common.contract import FAIL_ORPHAN, FAIL_STALE, ShadowMetric

VERDICTS = ShadowMetric.VERDICTS


def _counter(verdict: str, action: str) -> dict[str, str]:
    return {"job": contract.REMEDIATOR_JOB, "instance": REMEDIATOR_INSTANCE, "verdict": verdict, "action": action}


def _window(p: Profile) -> int:
    return int(p.seconds("shadow_disagreement_window"))


def _alert(p: Profile, verdict: str, action: str) -> dict[str, Any]:
    window = p.shadow_disagreement_window
    return {
        "exp_labels": {"verdict": verdict, "action": action, "severity": "warning"},
        "exp_annotations": {
            "summary": "The watchdog in shadow mode and the platform's own cleanup disagreed about an execution.",
            "description": (
                f"In the last {window}, executions got the shadow verdict {verdict} for action {action}: only "
                "one side acted (ours_only: we would have and the platform had not by the end of its own window; "
                "theirs_only: the platform did and we would not have). Read each one with "
                f"`exec-watchdog shadow report --since {window}` before switching the platform's cleanup off."),
            "runbook_url": runbook(p, contract.SHADOW_DISAGREEMENT),
        },
    }


@case("ExecWatchdogShadowDisagreement fires at the first ours_only verdict and is silent again once the "
      "window has passed it")
def shadow_ours_only(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    first = 4 * t.step  # the counter, created at 0 (four samples), counts its first disagreement here
    gone = first + _window(p)  # the window no longer holds the sample before the increase
    return {
        "input_series": [series(VERDICTS, _counter(contract.OURS_ONLY, FAIL_ORPHAN), f"0x3 1x{t.steps(gone)}")],
        "alert_rule_test": [*boundary(contract.SHADOW_DISAGREEMENT, first, t.step,
                                      _alert(p, contract.OURS_ONLY, FAIL_ORPHAN)),
                            *silent(contract.SHADOW_DISAGREEMENT, gone, gone + 3 * t.step)],
    }


@case("ExecWatchdogShadowDisagreement fires when a theirs_only series appears with its first count (no 0 "
      "before it) and is silent again once it is older than the window")
def shadow_theirs_only_new_series(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    appears = 4 * t.step
    gone = appears + _window(p)
    return {
        "input_series": [series(VERDICTS, _counter(contract.THEIRS_ONLY, FAIL_STALE), f"_x4 1x{t.steps(gone)}")],
        "alert_rule_test": [*boundary(contract.SHADOW_DISAGREEMENT, appears, t.step,
                                      _alert(p, contract.THEIRS_ONLY, FAIL_STALE)),
                            *silent(contract.SHADOW_DISAGREEMENT, gone, gone + 3 * t.step)],
    }


@case("ExecWatchdogShadowDisagreement stays silent for agree and different verdicts and for one-sided "
      "counters that stay at 0")
def shadow_agreement(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    late = _window(p) + 6 * t.step
    n = t.steps(late)
    return {
        "input_series": [
            series(VERDICTS, _counter(contract.AGREE, FAIL_ORPHAN), f"0+1x{n}"),
            series(VERDICTS, _counter(contract.DIFFERENT, FAIL_ORPHAN), f"_x2 1+1x{n}"),
            series(VERDICTS, _counter(contract.OURS_ONLY, FAIL_ORPHAN), f"0x{n}"),
            series(VERDICTS, _counter(contract.THEIRS_ONLY, FAIL_ORPHAN), f"_x3 0x{n}"),
        ],
        "alert_rule_test": silent(contract.SHADOW_DISAGREEMENT, 0, 3 * t.step, 4 * t.step, late),
    }


@case("ExecWatchdogShadowDisagreement stays silent when a restarted remediator's old one-sided counts "
      "come back at 0")
def shadow_restart(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    old = _window(p) // t.step + 5  # samples of an old count, older than the window at the restart
    restarted = (old + 3) * t.step
    return {
        "input_series": [series(VERDICTS, _counter(contract.OURS_ONLY, FAIL_ORPHAN),
                                f"3x{old - 1} _x3 0x{t.steps(restarted + _window(p))}")],
        "alert_rule_test": silent(contract.SHADOW_DISAGREEMENT, restarted - t.step, restarted,
                                  restarted + t.step, restarted + 10 * t.step),
    }
