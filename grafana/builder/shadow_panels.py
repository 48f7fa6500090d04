"""The dashboard's "Beside the platform's watchdog" row: while the remediator runs with --shadow
next to the platform's own cleanup service, what each side did with every execution either acted on
(the verdicts), how far ahead of the platform we were, and the disagreements a person must read
before switching the platform's cleanup off (docs/operations.md)."""

from __future__ import annotations

from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import dashboard as model

from exec_watchdog.common import contract
from exec_watchdog.common.contract import ShadowMetric as shadow_metrics
from exec_watchdog.grafana.builder.panels import (
    Query,
    instant_table,
    organize,
    quantiles,
    single_stat,
    time_series,
)

VERDICTS = shadow_metrics.VERDICTS
ONE_SIDED = f'{VERDICTS}{{verdict=~"{"|".join(contract.SHADOW_DISAGREEMENTS)}"}}'
AGREED = f'{VERDICTS}{{verdict="{contract.AGREE}"}}'


def beside_the_platform() -> list[Builder[model.Panel]]:
    return [
        single_stat(
            "Disagreements in the time range",
            "Executions only one side acted on (ours_only, theirs_only) in the dashboard's time range. "
            "Each one raises ExecWatchdogShadowDisagreement; read them with `exec-watchdog shadow report`.",
            "short",
            Query(f"sum(increase({ONE_SIDED}[$__range])) or vector(0)"),
            steps=((None, "green"), (1, "orange")),
        ),
        single_stat(
            "Agreement in the time range",
            "Share of the executions either side acted on that both ended the same way (verdict agree). "
            "Empty until the remediator runs with --shadow and some execution got a verdict.",
            "percentunit",
            Query(f"sum(increase({AGREED}[$__range])) / sum(increase({VERDICTS}[$__range]))"),
            steps=((None, "orange"), (0.99, "green")),
        ),
        time_series(
            "Shadow verdicts by action",
            "One verdict per execution either side acted on: agree (same action), ours_only (we would have, "
            "the platform had not by the end of its own window), theirs_only (the platform did, we would "
            "not have), different (both acted, differently).",
            "short",
            [Query(f"sum by (verdict, action) (increase({VERDICTS}[$__rate_interval]))", "{{verdict}} {{action}}")],
            bars=True,
            stacked=True,
            width=16,
        ),
        time_series(
            "Lead over the platform",
            "The platform's write time minus our decision time, by action, for executions both sides acted "
            "on: positive when we were first (the platform's 300 s cycle), negative when it was.",
            "s",
            quantiles(shadow_metrics.LEAD, "{{action}}"),
            min_value=None,
        ),
        instant_table(
            "Disagreements by verdict and action",
            "One-sided verdicts counted in the dashboard's time range, by verdict and action: what "
            "`exec-watchdog shadow report --since` lists one by one with both sides' story.",
            "short",
            [Query(f"sum by (verdict, action) (increase({ONE_SIDED}[$__range])) > 0")],
            transformations=[
                organize(exclude=["Time"], rename={"verdict": "Verdict", "action": "Action",
                                                   "Value": "Executions"}),
            ],
            sort_by="Executions",
        ),
    ]
