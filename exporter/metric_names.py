"""The names the exporter publishes: the contract the alert rules and dashboards are built on.

Names only: exporter/families.py declares each family's type, HELP text and labels on top of them,
and its ALL_NAMES is the published set that a test checks every metric an alert rule or a panel
uses against (see docs/contracts.md).
"""

from __future__ import annotations

PREFIX = "exec_watchdog"

EXECUTION_RUNTIME = f"{PREFIX}_execution_runtime_seconds"
EXECUTION_TIMEOUT = f"{PREFIX}_execution_timeout_seconds"
EXECUTION_AGENT_KNOWN = f"{PREFIX}_execution_agent_known"
EXECUTION_RECENTLY_COMPLETED = f"{PREFIX}_execution_recently_completed"
EXECUTION_DISPATCH_INFLIGHT = f"{PREFIX}_execution_dispatch_inflight"

AGENT_UP = f"{PREFIX}_agent_up"
AGENT_REGISTRY_EXECUTIONS = f"{PREFIX}_agent_registry_executions"
AGENT_SLOTS_USED = f"{PREFIX}_agent_slots_used"
AGENT_SLOTS_LIMIT = f"{PREFIX}_agent_slots_limit"

SCRAPE_DURATION = f"{PREFIX}_exporter_scrape_duration_seconds"
DATABASE_UP = f"{PREFIX}_exporter_database_up"
INVALID_ROWS = f"{PREFIX}_exporter_invalid_rows"
AGENT_POLL_ERRORS = f"{PREFIX}_exporter_agent_poll_errors_total"
BUILD_INFO = f"{PREFIX}_build_info"

# Run history, per schedule (exporter/history.py).
SCHEDULE_RUN_DURATION = f"{PREFIX}_schedule_run_duration_seconds"
SCHEDULE_RUNS_ENDED_BY_WATCHDOG = f"{PREFIX}_schedule_runs_ended_by_watchdog_total"
SCHEDULE_TIMEOUT = f"{PREFIX}_schedule_timeout_seconds"
HISTORY_READY = f"{PREFIX}_exporter_history_ready"
HISTORY_SKIPPED_ROWS = f"{PREFIX}_exporter_history_skipped_rows"
HISTORY_READ_DURATION = f"{PREFIX}_exporter_history_read_duration_seconds"
