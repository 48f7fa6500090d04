"""The rule for shadow mode (issue 23): while the remediator runs with --shadow beside the
platform's own cleanup service, a person hears of every execution only one side acted on.

Not a remediation: the alert carries no ``remediation`` label, so Alertmanager routes it to people
and never to the remediator's webhook. Registered by alerts/rules.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exec_watchdog.alerts.profiles import Profile
from exec_watchdog.common import contract
from exec_watchdog.common.contract import ShadowMetric as shadow

Alert = Callable[..., dict[str, Any]]

# One alert per verdict and action, whatever the number of remediator replicas.
_BY = "sum by (verdict, action)"


def disagreements() -> str:
    """The selector of the one-sided verdicts (ours_only, theirs_only)."""
    return f'{shadow.VERDICTS}{{verdict=~"{"|".join(contract.SHADOW_DISAGREEMENTS)}"}}'


def shadow_group(p: Profile, alert: Alert) -> dict[str, Any]:
    window = p.shadow_disagreement_window
    verdicts = disagreements()
    return {
        "name": "exec-watchdog.shadow",
        "interval": p.evaluation_interval,
        "rules": [
            alert(
                p, contract.SHADOW_DISAGREEMENT,
                # increase() needs a sample before the first disagreement; a verdict series born with
                # its first count (a counter not created at 0) is caught by the second branch, which
                # holds while the series is younger than the window.
                f"{_BY} (increase({verdicts}[{window}])) > 0\n"
                f"or\n"
                f"{_BY} ({verdicts} unless {verdicts} offset {window}) > 0\n",
                "0s", "warning",
                "The watchdog in shadow mode and the platform's own cleanup disagreed about an execution.",
                "In the last " + window + ", executions got the shadow verdict {{ $labels.verdict }} for action "
                "{{ $labels.action }}: only one side acted (ours_only: we would have and the platform had not "
                "by the end of its own window; theirs_only: the platform did and we would not have). Read each "
                f"one with `exec-watchdog shadow report --since {window}` before switching the platform's "
                "cleanup off.",
            ),
        ],
    }
