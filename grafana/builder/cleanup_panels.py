"""The dashboard's "Cleanup backlog" row: what Trinity's cleanup service ends outside Phase 0
(skipped rows never finalized, queued rows waiting long, activities left open), as the exporter
publishes them."""

from __future__ import annotations

from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import dashboard as model

from exec_watchdog.common.contract import ExporterMetric as exporter_metrics
from exec_watchdog.grafana.builder.panels import Query, single_stat, time_series

AGENT = 'agent=~"$agent"'
SKIPPED = f"{exporter_metrics.SKIPPED_UNFINALIZED_AGE}{{{AGENT}}}"
QUEUED = f"{exporter_metrics.QUEUED_AGE}{{{AGENT}}}"
ACTIVITIES = f"{exporter_metrics.ACTIVITY_STARTED_AGE}{{{AGENT}}}"


def cleanup() -> list[Builder[model.Panel]]:
    return [
        single_stat(
            "Skipped rows not finalized",
            "Skipped executions without completed_at: each one is finalized as failed by "
            "ExecWatchdogSkippedExecutionUnfinalized (Trinity's Phase 1c).",
            "short",
            Query(f"count({SKIPPED}) or vector(0)"),
            steps=((None, "green"), (1, "orange")),
        ),
        single_stat(
            "Long-open activities",
            "Activities still started past the exporter's --activity-publish-after; past the bound "
            "(Trinity: 120 minutes) ExecWatchdogActivityStale fails them, else Trinity's UI shows the agent busy.",
            "short",
            Query(f"count({ACTIVITIES}) or vector(0)"),
            steps=((None, "green"), (1, "orange")),
        ),
        time_series(
            "Oldest long-queued executions",
            "Queued executions waiting longer than the exporter's --queued-publish-after, by agent: the "
            "oldest wait. Past the backlog age ExecWatchdogQueuedExecutionExpired fails them.",
            "s",
            [Query(f"max by (agent) ({QUEUED})", "{{agent}}")],
        ),
    ]
