"""The rules for rows Trinity's cleanup service ends outside Phase 0: skipped rows never finalized and
queued rows past the backlog age (issue 22). One group, registered by alerts/rules.py.

Both act on the row alone (no agent is asked, in Trinity or here), so the alerts carry a
``remediation`` and the remediator re-reads the row before writing (remediator/row_cleanup.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exec_watchdog.alerts.profiles import Profile
from exec_watchdog.common import contract
from exec_watchdog.common.contract import (
    EXPIRE_BACKLOG,
    FAIL_STALE_ACTIVITY,
    FINALIZE_SKIPPED,
    REMEDIATION_LABEL,
)
from exec_watchdog.common.contract import ExporterMetric as exporter

_NAMES = "{{ $labels.execution_id }} (schedule {{ $labels.schedule_id }})"

Alert = Callable[..., dict[str, Any]]


def cleanup_group(p: Profile, alert: Alert) -> dict[str, Any]:
    return {
        "name": "exec-watchdog.cleanup",
        "interval": p.evaluation_interval,
        "rules": [
            alert(
                p, contract.SKIPPED_UNFINALIZED,
                # Every such row is published (Trinity finalizes them at any age); $value is its age.
                f"{exporter.SKIPPED_UNFINALIZED_AGE} >= 0\n",
                p.skipped_unfinalized_for, "warning",
                "A skipped execution was never given a completion time.",
                f"Execution {_NAMES} of agent {{{{ $labels.agent }}}} was skipped "
                "{{ $value | humanizeDuration }} ago and has no completed_at. The remediator finalizes it "
                "as failed, as Trinity's cleanup does.",
                **{REMEDIATION_LABEL: FINALIZE_SKIPPED},
            ),
            alert(
                p, contract.BACKLOG_EXPIRED,
                f"{exporter.QUEUED_AGE} > {p.backlog_max_age_seconds}\n",
                p.backlog_expired_for, "warning",
                "A queued execution has waited longer than the backlog allows.",
                f"Execution {_NAMES} of agent {{{{ $labels.agent }}}} has been queued for "
                "{{ $value | humanizeDuration }}, past the backlog age of "
                f"{p.backlog_max_age_seconds}s. The remediator fails it, as Trinity's backlog expiry does.",
                **{REMEDIATION_LABEL: EXPIRE_BACKLOG},
            ),
            alert(
                p, contract.ACTIVITY_STALE,
                # Trinity's 120-minute backstop: without it the UI shows the agent busy (Trinity #1804).
                f"{exporter.ACTIVITY_STARTED_AGE} > {p.activity_stale_seconds}\n",
                p.activity_stale_for, "warning",
                "An activity has been in state started for longer than any run may take.",
                "Activity {{ $labels.activity_id }} ({{ $labels.activity_type }}) of agent {{ $labels.agent }} "
                "was started {{ $value | humanizeDuration }} ago and never closed, so Trinity's UI shows the "
                f"agent busy. Past {p.activity_stale_seconds}s the remediator marks it failed, as Trinity's "
                "cleanup does.",
                **{REMEDIATION_LABEL: FAIL_STALE_ACTIVITY},
            ),
        ],
    }
