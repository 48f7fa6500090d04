"""The capacity-slot alerts: Trinity's Phase 3 slot reclaim and its start-up leak sweep, as rules.

The exporter publishes only slots that can fire (exporter/slot_facts.py): age, TTL and whether
the slot's row is missing or finished. Three alerts, each with its own remediation:

- ``ExecWatchdogSlotExpired``: past its TTL while the agent answers; the remediator asks the agent,
  the in-flight marker, terminates best-effort and fails the run (or only removes the slot);
- ``ExecWatchdogSlotExpiredAgentUnreachable``: past its TTL and the agent has not answered for
  the whole ``slot_unreachable_for`` (Trinity fails on one unanswered call; we wait): the run is
  failed with Trinity's #497 text. Its own remediation value, so a fleet-wide unreachability
  alert can inhibit it;
- ``ExecWatchdogSlotLeaked``: the row is missing or finished and the slot older than Trinity's
  15 s grace: the slot is released, no row is touched.

No slot alert fires while Trinity's re-delivery governor holds ``governor:pause``.
"""

from __future__ import annotations

from exec_watchdog.alerts.profiles import Profile
from exec_watchdog.alerts.timeout_rules import AlertBuilder
from exec_watchdog.common import contract
from exec_watchdog.common.contract import (
    RECLAIM_EXPIRED_SLOT,
    RECLAIM_SLOT_UNREACHABLE,
    RELEASE_LEAKED_SLOT,
    REMEDIATION_LABEL,
)
from exec_watchdog.common.contract import ExporterMetric as exporter

_SLOT = "on (job, instance, agent, execution_id)"
_AGENT = "on (job, instance, agent)"
_PAUSED = f"unless on (job, instance)\n{exporter.SLOTS_PAUSED} == 1\n"


def slot_rules(p: Profile, alert: AlertBuilder) -> list[dict[str, object]]:
    age, ttl, leaked = exporter.SLOT_AGE, exporter.SLOT_TTL, exporter.SLOT_LEAKED
    expired = f"{age}\n> {_SLOT}\n{ttl}\n"
    return [
        alert(
            p, contract.SLOT_EXPIRED,
            f"{expired}unless {_SLOT}\n{leaked} == 1\nunless {_AGENT}\n{exporter.AGENT_UP} == 0\n{_PAUSED}",
            p.slot_expired_for, "critical",
            "A capacity slot has outlived its TTL.",
            "The slot of execution {{ $labels.execution_id }} on agent {{ $labels.agent }} was acquired "
            "{{ $value | humanizeDuration }} ago, past its TTL (timeout + 300 s). The remediator asks the agent; "
            "unless the agent or a backend dispatcher still holds the run, it terminates it, marks it failed and "
            "releases the slot.",
            **{REMEDIATION_LABEL: RECLAIM_EXPIRED_SLOT},
        ),
        alert(
            p, contract.SLOT_EXPIRED_AGENT_UNREACHABLE,
            f"{expired}and {_AGENT}\n{exporter.AGENT_UP} == 0\nunless {_SLOT}\n{leaked} == 1\n{_PAUSED}",
            p.slot_unreachable_for, "critical",
            "A capacity slot has outlived its TTL and its agent does not answer.",
            "The slot of execution {{ $labels.execution_id }} on agent {{ $labels.agent }} was acquired "
            "{{ $value | humanizeDuration }} ago, past its TTL, and the agent has not answered for "
            f"{p.slot_unreachable_for}. The remediator marks the run failed and releases the slot.",
            **{REMEDIATION_LABEL: RECLAIM_SLOT_UNREACHABLE},
        ),
        alert(
            p, contract.SLOT_LEAKED,
            f"{age} >= {p.slot_leak_min_age_seconds}\nand {_SLOT}\n{leaked} == 1\n{_PAUSED}",
            p.slot_leaked_for, "warning",
            "A capacity slot is held for an execution that has ended or does not exist.",
            "The slot of execution {{ $labels.execution_id }} on agent {{ $labels.agent }}, acquired "
            "{{ $value | humanizeDuration }} ago, belongs to a missing or finished execution. The remediator "
            "releases exactly that slot.",
            **{REMEDIATION_LABEL: RELEASE_LEAKED_SLOT},
        ),
    ]


def slot_group(p: Profile, alert: AlertBuilder) -> dict[str, object]:
    return {"name": "exec-watchdog.slots", "interval": p.evaluation_interval, "rules": slot_rules(p, alert)}
