"""The dashboard's "Timeouts from evidence" row: per schedule, the runtime distribution against the
configured and the advised timeout, the runs the watchdog ended, and the history reader's health.

The quantiles and the advised timeout are the recording rules' (alerts/timeout_rules.py), so the
panels show exactly what the TooTight/TooLoose alerts decide from.
"""

from __future__ import annotations

from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import dashboard as model

from exec_watchdog.alerts import timeout_rules as rules
from exec_watchdog.common.contract import ExporterMetric as exporter_metrics
from exec_watchdog.grafana.builder.panels import Query, column, instant_table, merge, organize, single_stat, time_series

AGENT = 'agent=~"$agent"'
SCHEDULE = "agent, schedule_id"
P99 = f'{rules.QUANTILE}{{quantile="0.99", {AGENT}}}'
CONFIGURED = f"max by ({SCHEDULE}) ({exporter_metrics.SCHEDULE_TIMEOUT}{{{AGENT}}})"
ADVISED = f"{rules.ADVISED}{{{AGENT}}}"
DURATION = exporter_metrics.SCHEDULE_RUN_DURATION


def _quantile(q: str) -> str:
    return f'{rules.QUANTILE}{{quantile="{q}", {AGENT}}}'


def timeouts() -> list[Builder[model.Panel]]:
    return [
        instant_table(
            "Timeout advice per schedule",
            "Per schedule over the rule profile's advice window: successful runs, their p50/p95/p99, the "
            "configured effective timeout and the advised one (p99 x 1.5 rounded up to a minute; empty "
            "with too few runs). `exec-watchdog advise` prints the same from the database.",
            "s",
            [
                Query(f"{rules.RUNS}{{{AGENT}}}"),
                Query(f"max without (quantile) ({_quantile('0.5')})"),
                Query(f"max without (quantile) ({_quantile('0.95')})"),
                Query(f"max without (quantile) ({P99})"),
                Query(f"{CONFIGURED} and on ({SCHEDULE}) {rules.RUNS}"),
                Query(ADVISED),
            ],
            transformations=[
                merge(),
                organize(
                    exclude=["Time", "__name__", "instance", "job"],
                    rename={"Value #A": "Runs", "Value #B": "p50", "Value #C": "p95", "Value #D": "p99",
                            "Value #E": "Timeout", "Value #F": "Advised", "agent": "Agent",
                            "schedule_id": "Schedule"},
                ),
            ],
            columns={"Runs": column(unit="short")},
            sort_by="p99",
            width=24,
        ),
        time_series(
            "Runtime p99 against configured and advised timeout",
            "Per schedule: the successful runs' p99 (solid), the configured timeout (dashed) and the "
            "advised one (dotted). A p99 close to its timeout is TooTight; a timeout far above the "
            "advice is TooLoose.",
            "s",
            [
                Query(f"max without (quantile) ({P99})", "{{schedule_id}} p99"),
                Query(f"{CONFIGURED} and on ({SCHEDULE}) {rules.RUNS}", "{{schedule_id}} timeout"),
                Query(ADVISED, "{{schedule_id}} advised"),
            ],
        ).override_by_regexp(
            "/ timeout$/",
            [model.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})],
        ).override_by_regexp(
            "/ advised$/",
            [model.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dot", "dash": [0, 10]})],
        ),
        time_series(
            "Runtime distribution of successful runs",
            "Per schedule, successful runs completed in each interval by duration bucket (upper bound "
            "in seconds); compare with the timeout in the table above.",
            "short",
            [Query(f'sum by (schedule_id, le) (increase({DURATION}_bucket{{status="success", {AGENT}}}'
                   "[$__rate_interval]))", "{{schedule_id}} <= {{le}} s")],
            bars=True,
        ),
        time_series(
            "Runs the watchdog ended",
            "Completed runs the watchdog ended, per schedule and action: auto_terminated (past the "
            "timeout), orphan_recovered (lost), result_recovered (claimed from the agent). Many "
            "auto-terminations with good runs near the timeout: the timeout is too tight.",
            "short",
            [Query(f"sum by (schedule_id, action) (increase({exporter_metrics.SCHEDULE_RUNS_ENDED_BY_WATCHDOG}"
                   f"{{{AGENT}}}[$__rate_interval]))", "{{schedule_id}} {{action}}")],
            bars=True,
            stacked=True,
        ),
        single_stat(
            "Run history read",
            "1 once the exporter's first full read of the run history has finished (until then no "
            "history series are published).",
            "none",
            Query(f"min({exporter_metrics.HISTORY_READY}) or vector(0)"),
            steps=((None, "orange"), (1, "green")),
        ),
        single_stat(
            "History read time",
            "Wall time of the exporter's last run-history read (incremental after the first).",
            "s",
            Query(f"max({exporter_metrics.HISTORY_READ_DURATION})"),
        ),
        single_stat(
            "Completed rows skipped",
            "Completed rows left out of the run history: no agent name or unreadable timestamps.",
            "short",
            Query(f"max({exporter_metrics.HISTORY_SKIPPED_ROWS}) or vector(0)"),
            steps=((None, "green"), (1, "orange")),
        ),
        single_stat(
            "Advice window (exporter)",
            "The exporter's --advice-window: runs completed before now minus this are counted apart and never "
            "advised on. Keep it equal to the rule profile's advice_window.",
            "s",
            Query(f"max({exporter_metrics.HISTORY_WINDOW})"),
        ),
        single_stat(
            "Successful runs before the window",
            "Successful runs the exporter counted that completed before the advice window (left out of the advice).",
            "short",
            Query(f'sum(max by ({SCHEDULE}) ({exporter_metrics.SCHEDULE_SUCCESSFUL_RUNS_BEFORE_WINDOW}'
                  f'{{le="+Inf", {AGENT}}})) or vector(0)'),
        ),
        single_stat(
            "Runs ended by the watchdog before the window",
            "Runs the watchdog ended that completed before the advice window (left out of TooTight).",
            "short",
            Query(f"sum(max by ({SCHEDULE}, action) ({exporter_metrics.SCHEDULE_RUNS_ENDED_BEFORE_WINDOW}"
                  f"{{{AGENT}}})) or vector(0)"),
        ),
    ]

