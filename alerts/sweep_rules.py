"""Trinity's cleanup sweeps that the agent cannot answer for, as rules: stale runs (Phase 1), runs
without a session (Phase 1b), and the fleet guard that holds both while most agents are unreachable.

Trinity asks no agent on either sweep; we keep a run the agent still lists for the overdue path
(terminated first), and hold everything that depends on unreachability while most of the fleet is
unreachable at once (the fault is more likely the watchdog's own network).
"""

from __future__ import annotations

from exec_watchdog.alerts.profiles import Profile
from exec_watchdog.alerts.timeout_rules import AlertBuilder
from exec_watchdog.common import contract
from exec_watchdog.common.contract import FAIL_NO_SESSION, FAIL_STALE, REMEDIATION_LABEL
from exec_watchdog.common.contract import ExporterMetric as exporter

_EXECUTION = "on (job, instance, agent, execution_id)"
_EXECUTION_NAMES = "{{ $labels.execution_id }} (schedule {{ $labels.schedule_id }})"


def sweep_rules(p: Profile, alert: AlertBuilder) -> list[dict[str, object]]:
    overrun = exporter.EXECUTION_STALE_OVERRUN
    sessionless = exporter.EXECUTION_SESSIONLESS_RUNTIME
    known = exporter.EXECUTION_AGENT_KNOWN
    down = f"max by (agent) ({exporter.AGENT_UP})"
    return [
        alert(
            p, contract.STALE,
            # Past the agent's own timeout + grace (or the flat window of an unknown or soft-deleted
            # agent), and not listed by the agent: a listed run is the overdue rule's (terminated
            # first). agent_known is absent while the agent does not answer, so a run whose agent
            # stays unreachable for the whole `for` fires too; the fleet guard inhibits that. A run a
            # backend dispatcher still holds (in-flight marker alive) is not stale: it has not started.
            f"(\n"
            f'  {overrun}{{window="agent"}} > {p.stale_grace_seconds}\n'
            f'  or\n'
            f'  {overrun}{{window="unowned"}} > {p.stale_unowned_seconds}\n'
            f")\n"
            f"unless {_EXECUTION}\n"
            f"{known} == 1\n"
            f"unless {_EXECUTION}\n"
            f"{exporter.EXECUTION_DISPATCH_INFLIGHT} == 1\n",
            p.stale_for, "critical",
            "An execution is past its stale window and its agent does not list it.",
            f"Execution {_EXECUTION_NAMES} on agent {{{{ $labels.agent }}}} is past its stale window "
            "({{ $labels.window }} window) and the agent has not listed it (it answered without it or did "
            "not answer). The remediator re-verifies and marks it failed with Trinity's stale text.",
            **{REMEDIATION_LABEL: FAIL_STALE},
        ),
        alert(
            p, contract.NO_SESSION,
            # No Claude session long after the start and the agent not answering (or not polled):
            # Trinity's silent launch failure. A run the agent answered about is the orphan or the
            # overdue rule's, as Trinity's cycle runs its watchdog first.
            f"{sessionless} > {p.no_session_min_age_seconds}\n"
            f"unless {_EXECUTION}\n"
            f"{known}\n",
            p.no_session_for, "critical",
            "An execution never got a session and its agent does not answer.",
            f"Execution {_EXECUTION_NAMES} on agent {{{{ $labels.agent }}}} has no Claude session after "
            "{{ $value | humanizeDuration }} and the agent has not answered about it. The remediator "
            "re-verifies and marks it failed with Trinity's silent launch failure text.",
            **{REMEDIATION_LABEL: FAIL_NO_SESSION},
        ),
        alert(
            p, contract.FLEET_UNREACHABLE,
            # One series per agent across exporter replicas (max by agent), so a replica pair does
            # not count an agent twice; the value is the number of unreachable agents.
            f"count({down} == 0) >= {p.fleet_unreachable_min_agents}\n"
            f"and\n"
            f"count({down} == 0) * 100 / count({down}) >= {p.fleet_unreachable_percent}\n",
            p.fleet_unreachable_for, "critical",
            "Much of the fleet is unreachable at once: the watchdog's own network is the likely fault.",
            "{{ $value }} agents do not answer the exporter (at least "
            f"{p.fleet_unreachable_percent}% of the fleet and {p.fleet_unreachable_min_agents} agents). Every "
            "remediation that acts on unreachable agents is held until the fleet answers again: check the "
            "watchdog's network before the platform.",
        ),
    ]


def sweep_group(p: Profile, alert: AlertBuilder) -> dict[str, object]:
    return {"name": "exec-watchdog.sweeps", "interval": p.evaluation_interval, "rules": sweep_rules(p, alert)}
