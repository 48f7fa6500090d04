"""Every metric family the exporter publishes, declared once: name, type, HELP text and label names.

The snapshot writer (exposition.py) and the run-history writer (history.py) take their ``# HELP`` /
``# TYPE`` headers and their label escaping from here; the test oracle builds its client_python
families from the same entries, so the texts exist in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from exec_watchdog.common.contract import ExporterMetric as names

Kind = Literal["gauge", "counter", "histogram"]

EXECUTION_LABELS = ("agent", "execution_id", "schedule_id")
SCHEDULE_LABELS = ("agent", "schedule_id")
SLOT_LABELS = ("agent", "execution_id")


@dataclass(frozen=True, slots=True)
class Family:
    name: str  # as written after # HELP / # TYPE (a counter's includes _total)
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()  # in exposition order; a histogram's `le` is not listed

    @property
    def header(self) -> str:
        """The ``# HELP`` and ``# TYPE`` lines, escaped as text format 0.0.4 (and client_python) escape them."""
        text = self.help.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {self.name} {text}\n# TYPE {self.name} {self.kind}\n"


def escape_label_value(value: str) -> str:
    """A label value as it goes between the quotes (backslash, newline and double quote escaped)."""
    if "\\" in value or "\n" in value or '"' in value:  # rare: skip three replaces on the fast path
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
    return value


# One scrape's snapshot (exposition.py), in exposition order.
SNAPSHOT: tuple[Family, ...] = (
    Family(names.EXECUTION_RUNTIME, "gauge",
           "Seconds since the running execution started (now - started_at).", EXECUTION_LABELS),
    Family(names.EXECUTION_TIMEOUT, "gauge",
           "Effective timeout of the running execution: COALESCE(schedule, agent, 3600).", EXECUTION_LABELS),
    Family(names.EXECUTION_AGENT_KNOWN, "gauge",
           "1 if the agent's registry has the execution (running, pending or recently completed), 0 if the agent "
           "answered without it; absent when the agent could not be asked.", EXECUTION_LABELS),
    Family(names.EXECUTION_RECENTLY_COMPLETED, "gauge",
           "1 if the agent lists the execution as recently completed (finished, its report not in the database "
           "yet), else 0; absent when the agent could not be asked.", EXECUTION_LABELS),
    Family(names.EXECUTION_DISPATCH_INFLIGHT, "gauge",
           "1 if a backend dispatcher may still hold the execution (its in-flight marker is alive, or the markers "
           "are unreadable and it is younger than the in-flight bound), else 0; absent unless the agent answered "
           "without it running or pending.", EXECUTION_LABELS),
    Family(names.SKIPPED_UNFINALIZED_AGE, "gauge",
           "Seconds since started_at of a skipped execution that has no completed_at (no lease); Trinity's "
           "cleanup finalizes every one.", EXECUTION_LABELS),
    Family(names.QUEUED_AGE, "gauge",
           "Seconds since queued_at of a queued execution (no lease), only once it has waited longer than the "
           "exporter's --queued-publish-after.", EXECUTION_LABELS),
    Family(names.ACTIVITY_STARTED_AGE, "gauge",
           "Seconds since started_at of an activity still in state started, only once it is older than the "
           "exporter's --activity-publish-after (Trinity fails them at 120 minutes).",
           ("activity_id", "activity_type", "agent")),
    Family(names.EXECUTION_UNKNOWN_SINCE, "gauge",
           "Unix time of the first scrape that found the running execution unknown to its agent (not running, "
           "pending or recently completed, and no live in-flight marker); present while it stays unknown.",
           EXECUTION_LABELS),
    Family(names.EXECUTION_STALE_OVERRUN, "gauge",
           "Seconds a running execution is past what Trinity's stale sweep counts from: window=\"agent\", "
           "runtime minus the agent's COALESCE(execution_timeout_seconds, 3600), published once positive; "
           "window=\"unowned\", the runtime of a run whose agent is unknown to agent_ownership or soft-deleted.",
           (*EXECUTION_LABELS, "window")),
    Family(names.EXECUTION_SESSIONLESS_RUNTIME, "gauge",
           "Runtime of a running execution whose claude_session_id is NULL or empty (Trinity's silent "
           "launch failure); absent once it has a session.", EXECUTION_LABELS),
    Family(names.AGENT_UP, "gauge",
           "1 if the agent answered GET /api/executions/running in this scrape, else 0.", ("agent",)),
    Family(names.AGENT_REGISTRY_EXECUTIONS, "gauge",
           "Executions in the agent's registry, by state.", ("agent", "state")),
    Family(names.AGENT_SLOTS_USED, "gauge", "Capacity slots held on the agent.", ("agent",)),
    Family(names.AGENT_SLOTS_LIMIT, "gauge",
           "Capacity slot limit of the agent (agent_ownership.max_parallel_tasks, default 3).", ("agent",)),
    Family(names.SLOT_AGE, "gauge",
           "Seconds since the capacity slot was acquired (now - its sorted-set score); only slots past 80 % of their "
           "TTL or leaked.", SLOT_LABELS),
    Family(names.SLOT_TTL, "gauge",
           "Lifetime of the capacity slot: its hash's timeout_seconds + 300, else the agent's timeout + 300, else "
           "1200; only slots past 80 % of it or leaked.", SLOT_LABELS),
    Family(names.SLOT_LEAKED, "gauge",
           "1 if the slot's execution row is missing or success/failed/cancelled/skipped, else 0; only slots past "
           "80 % of their TTL or leaked.", SLOT_LABELS),
    Family(names.SLOTS_PAUSED, "gauge",
           "1 while Redis key governor:pause exists (Trinity's re-delivery governor pauses slot cleanup), else 0; "
           "absent when the slot store was not read."),
    Family(names.SCRAPE_DURATION, "gauge",
           "Wall time of this scrape's gathering: database read, agent polls and slot read."),
    Family(names.DATABASE_UP, "gauge", "1 if the running-executions query succeeded in this scrape, else 0."),
    Family(names.INVALID_ROWS, "gauge",
           "Running rows that cannot be published (unreadable started_at, missing or unsafe agent name)."),
    Family(names.AGENT_POLL_ERRORS, "counter",
           "Failed polls of an agent's running executions, by reason.", ("agent", "reason")),
    Family(names.BUILD_INFO, "gauge", "The exporter's version; always 1.", ("version",)),
)

# The run history (history.py), in exposition order.
HISTORY: tuple[Family, ...] = (
    Family(names.SCHEDULE_RUN_DURATION, "histogram",
           "Durations of a schedule's completed runs (duration_ms, else completed_at - started_at), by final "
           "status; manual runs under schedule_id __manual__.", (*SCHEDULE_LABELS, "status")),
    Family(names.SCHEDULE_RUNS_ENDED_BY_WATCHDOG, "counter",
           "Completed runs the watchdog ended, by action: orphan_recovered, auto_terminated, result_recovered "
           "(recognised by the texts it writes).", ("action", *SCHEDULE_LABELS)),
    Family(names.SCHEDULE_TIMEOUT, "gauge",
           "Effective timeout of the schedule's runs: COALESCE(schedule, agent, 3600), 0 means 900.",
           SCHEDULE_LABELS),
    Family(names.HISTORY_READY, "gauge",
           "1 once the first full read of the run history has finished (history series are published from "
           "then on)."),
    Family(names.HISTORY_SKIPPED_ROWS, "gauge",
           "Completed rows left out of the run history: no agent name or unreadable timestamps."),
    Family(names.HISTORY_READ_DURATION, "gauge", "Wall time of the last finished run-history read."),
    Family(names.SCHEDULE_SUCCESSFUL_RUNS_BEFORE_WINDOW, "counter",
           "Successful runs counted in the duration histogram that completed before the advice window "
           "(now - --advice-window), by bucket: the histogram minus these is the window.",
           ("agent", "le", "schedule_id")),
    Family(names.SCHEDULE_RUNS_ENDED_BEFORE_WINDOW, "counter",
           "Runs counted as ended by the watchdog that completed before the advice window, by action.",
           ("action", *SCHEDULE_LABELS)),
    Family(names.HISTORY_WINDOW, "gauge",
           "The advice window the before-window counters use (--advice-window); keep it equal to the rule "
           "profile's advice_window."),
)

BY_NAME: dict[str, Family] = {family.name: family for family in SNAPSHOT + HISTORY}
# Every family name on /metrics (besides client_python's process_* and python_info): the set the
# alert rules and dashboards are checked against.
ALL_NAMES: tuple[str, ...] = tuple(BY_NAME)


def header(name: str) -> str:
    return BY_NAME[name].header
