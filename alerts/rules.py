"""The alert rules, built from one profile's tunables.

One source for every profile: the fast and the production rule files differ only in the numbers
from ``profiles.yml``. Per-execution series carry ``agent``, ``execution_id`` and ``schedule_id``;
every join below matches ``on`` the series' identity and keeps the left-hand labels, so those
labels reach the alert and, through it, the remediator.
"""

from __future__ import annotations

from typing import Any

from exec_watchdog.alerts import cleanup_rules, shadow_rules, slot_rules, sweep_rules, timeout_rules
from exec_watchdog.alerts.profiles import Profile
from exec_watchdog.common import contract
from exec_watchdog.common.contract import (
    CLAIM_RESULT,
    FAIL_ORPHAN,
    REMEDIATION_LABEL,
    TERMINATE_OVERDUE,
)
from exec_watchdog.common.contract import ExporterMetric as exporter
from exec_watchdog.common.contract import RemediatorMetric as remediator

# The external label that tells the servers of a Prometheus HA set apart; dropped from alerts
# (alert_relabel_configs) so their alerts are identical and Alertmanager deduplicates them.
REPLICA_LABEL = "replica"

# One execution as the exporter publishes it. job/instance keep two exporter replicas apart
# (otherwise a one-to-one comparison would fail on duplicate matches).
_EXECUTION = "on (job, instance, agent, execution_id)"

_EXECUTION_NAMES = "{{ $labels.execution_id }} (schedule {{ $labels.schedule_id }})"

Rule = dict[str, Any]


def _alert(profile: Profile, name: str, expr: str, for_: str, severity: str, summary: str,
           description: str, **labels: str) -> Rule:
    if not summary.endswith("."):
        raise ValueError(f"{name}: the summary must be a sentence ending with a period")
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, **labels},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{profile.runbook_url}#{name.lower()}",
        },
    }


# The orphan alert carries the first scrape that found its run unknown (the exporter's gauge), so
# the remediator can say how long after the run was lost it was recovered: unix seconds, or
# "unknown" when no exporter published it (an older exporter, or the series not scraped yet).
UNKNOWN_SINCE_TEMPLATE = (
    f'{{{{ with printf "min({exporter.EXECUTION_UNKNOWN_SINCE}{{agent=%q,execution_id=%q}})" '
    '$labels.agent $labels.execution_id | query }}{{ . | first | value | printf "%.3f" }}'
    '{{ else }}unknown{{ end }}')


def execution_rules(p: Profile) -> list[Rule]:
    runtime = exporter.EXECUTION_RUNTIME
    known = exporter.EXECUTION_AGENT_KNOWN
    timeout = exporter.EXECUTION_TIMEOUT
    completed = exporter.EXECUTION_RECENTLY_COMPLETED
    inflight = exporter.EXECUTION_DISPATCH_INFLIGHT
    orphaned = _alert(
            p, contract.ORPHANED,
            # Runtime on the left, so $value is the age. agent_known is absent while the agent
            # cannot be asked, so an unreachable agent never makes orphans; a run a backend
            # dispatcher still holds (Trinity's in-flight marker) is never one either.
            f"{runtime} > {p.orphan_min_age_seconds}\n"
            f"and {_EXECUTION}\n"
            f"{known} == 0\n"
            f"unless {_EXECUTION}\n"
            f"{inflight} == 1\n",
            p.orphan_for, "critical",
            "An execution is running in the database but unknown to its agent.",
            f"Agent {{{{ $labels.agent }}}} answered and does not know execution {_EXECUTION_NAMES}, which the "
            "database has shown as running for {{ $value | humanizeDuration }}. The remediator "
            "re-verifies, marks it failed and releases its slot.",
            **{REMEDIATION_LABEL: FAIL_ORPHAN},
        )
    orphaned["annotations"][contract.UNKNOWN_SINCE_ANNOTATION] = UNKNOWN_SINCE_TEMPLATE
    return [
        orphaned,
        _alert(
            p, contract.OVERDUE,
            # The default timeout stands in for an execution whose timeout series is missing.
            # group_left keeps all of the runtime's labels (a plain `on` would keep only those).
            # Only runs the agent still knows: terminating needs the agent, and an unknown run is
            # the orphan rule's, so one execution never gets two remediations.
            f"{runtime}\n"
            f"> {_EXECUTION} group_left ()\n"
            f"  (\n"
            f"    {timeout}\n"
            f"    or {_EXECUTION}\n"
            f"    {runtime} * 0 + {p.overdue_default_timeout_seconds}\n"
            f"  )\n"
            f"and {_EXECUTION}\n"
            f"{known} == 1\n"
            f"unless {_EXECUTION}\n"
            f"{completed} == 1\n",
            p.overdue_for, "critical",
            "An execution has run past its timeout.",
            f"Execution {_EXECUTION_NAMES} on agent {{{{ $labels.agent }}}} has been running for "
            "{{ $value | humanizeDuration }}, past its timeout (default "
            f"{p.overdue_default_timeout_seconds}s when none is set). The remediator terminates it "
            "on the agent, marks it failed and releases its slot.",
            **{REMEDIATION_LABEL: TERMINATE_OVERDUE},
        ),
        _alert(
            p, contract.COMPLETED_UNREPORTED,
            # Finished on the agent, still running in the database: its retained result is claimed
            # (never terminated: the overdue rule leaves these runs alone).
            f"{runtime}\n"
            f"and {_EXECUTION}\n"
            f"{completed} == 1\n"
            f"unless {_EXECUTION}\n"
            f"{inflight} == 1\n",
            p.completed_unreported_for, "critical",
            "An execution finished on its agent but the database still shows it running.",
            f"Agent {{{{ $labels.agent }}}} lists execution {_EXECUTION_NAMES} as recently completed, "
            "yet the database has shown it as running for {{ $value | humanizeDuration }}. The "
            "remediator claims the result the agent kept, writes it and releases its slot.",
            **{REMEDIATION_LABEL: CLAIM_RESULT},
        ),
        _alert(
            p, contract.STUCK,
            f"{runtime} > {p.stuck_threshold_seconds}\n",
            p.stuck_for, "warning",
            "An execution has been running for unusually long.",
            f"Execution {_EXECUTION_NAMES} on agent {{{{ $labels.agent }}}} has been running for "
            "{{ $value | humanizeDuration }}. The watchdog does nothing about it until it is "
            "orphaned or overdue.",
        ),
    ]


def pipeline_rules(p: Profile) -> list[Rule]:
    def remediator_reason(expr: str, reason: str) -> str:
        return f'label_replace(\n  {expr},\n  "reason", "{reason}", "", ""\n)'

    exporter_up = f'up{{job="{contract.EXPORTER_JOB}"}}'
    remediator_up = f'up{{job="{contract.REMEDIATOR_JOB}"}}'
    window = p.remediator_failing_window
    return [
        _alert(
            p, contract.AGENT_UNREACHABLE,
            f"{exporter.AGENT_UP} == 0\n",
            p.agent_unreachable_for, "warning",
            "An agent does not answer the exporter.",
            "Agent {{ $labels.agent }} has not answered GET /api/executions/running. Its executions "
            "can be neither verified nor recovered: the watchdog leaves them alone until it answers, "
            "except runs past their stale window or without a session, which end as Trinity's cleanup ends them.",
        ),
        _alert(
            p, contract.EXPORTER_DOWN,
            f"{exporter_up} == 0\nor\nabsent({exporter_up})\n",
            p.exporter_down_for, "critical",
            "Prometheus is not scraping the exec-watchdog exporter.",
            "Job {{ $labels.job }}{{ with $labels.instance }} at {{ . }}{{ end }} has no successful "
            "scrape (target down or not configured). No agent or execution is watched meanwhile.",
        ),
        _alert(
            p, contract.DATABASE_UNREACHABLE,
            f"{exporter.DATABASE_UP} == 0\n",
            p.database_unreachable_for, "critical",
            "The exporter cannot read the executions table.",
            "Exporter {{ $labels.instance }} failed its executions query. No agent or execution is "
            "watched meanwhile.",
        ),
        _alert(
            p, contract.REMEDIATOR_FAILING,
            remediator_reason(
                f'sum by (job, instance) (rate({remediator.REQUESTS}{{code=~"5.."}}[{window}])) > 0',
                "webhook_errors") + "\nor\n"
            + remediator_reason(
                f'sum by (job, instance) (increase({remediator.REMEDIATIONS}{{outcome="retry"}}[{window}])) > 0',
                "remediations_retrying") + "\nor\n"
            + remediator_reason(f"{remediator_up} == 0", "target_down") + "\nor\n"
            + remediator_reason(f"absent({remediator_up})", "target_down") + "\n",
            p.remediator_failing_for, "critical",
            "The remediator keeps failing to finish remediations.",
            "Remediator {{ $labels.job }}{{ with $labels.instance }} at {{ . }}{{ end }} is failing "
            "({{ $labels.reason }}). Orphaned and overdue executions stay stuck until it recovers; "
            "Alertmanager keeps retrying.",
        ),
        _alert(
            p, contract.BREAKER_OPEN,
            f"{remediator.BREAKER_OPEN} == 1\n",
            p.breaker_open_for, "critical",
            "The remediator's breaker has stopped all remediation.",
            "Remediator {{ $labels.instance }} saw too many remediations at once and stopped acting. "
            "Orphaned and overdue executions are left alone until an operator checks and it closes.",
        ),
        _alert(
            p, contract.HEARTBEAT,
            "vector(1)\n",
            "0s", "none",
            "Always firing, to prove that alerts flow from Prometheus through Alertmanager.",
            "This alert always fires. If its receiver stops hearing it, part of Prometheus, "
            "Alertmanager or the notification path is broken and no other alert would arrive either.",
        ),
    ]


def rule_groups(profile: Profile) -> dict[str, Any]:
    """The Prometheus rule file for ``profile``, as a dict ready to dump as YAML."""
    interval = profile.evaluation_interval
    return {
        "groups": [
            {"name": "exec-watchdog.executions", "interval": interval, "rules": execution_rules(profile)},
            {"name": "exec-watchdog.pipeline", "interval": interval, "rules": pipeline_rules(profile)},
            timeout_rules.timeout_group(profile, _alert),
            slot_rules.slot_group(profile, _alert),
            cleanup_rules.cleanup_group(profile, _alert),
            sweep_rules.sweep_group(profile, _alert),
            shadow_rules.shadow_group(profile, _alert),
        ]
    }
