"""The exec-watchdog dashboard, as code.

Reading order follows an operator's questions: is anything stuck right now (overview), which
executions (executions), what did the watchdog do about it (alerts and recoveries), is it the
agents or capacity (agents), and can the watchdog itself be trusted (health).

Metric names come from the exporter's and remediator's own name modules, so a renamed metric
breaks the build here instead of leaving a silent empty panel.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import dashboard as model

from exec_watchdog.common import contract
from exec_watchdog.common.contract import ExporterMetric as exporter_metrics
from exec_watchdog.common.contract import RemediatorMetric as remediator_metrics
from exec_watchdog.grafana.builder.cleanup_panels import cleanup
from exec_watchdog.grafana.builder.panels import (
    BREAKER,
    PROMETHEUS,
    UP_DOWN,
    Query,
    column,
    instant_table,
    merge,
    organize,
    quantiles,
    row,
    single_stat,
    state_timeline,
    time_series,
    value_texts,
)
from exec_watchdog.grafana.builder.shadow_panels import beside_the_platform
from exec_watchdog.grafana.builder.timeout_panels import timeouts

# Prometheus job names of the two scrape targets. Change them here (and regenerate) if your scrape
# config names the jobs differently; nothing else in the dashboard mentions a job.

UID = contract.GRAFANA_DASHBOARD_UID
TITLE = "Exec watchdog"

# Defaults of the data source variables: the uids and names grafana/provisioning/ gives them.
PROMETHEUS_DATASOURCE_UID = "exec-watchdog-prometheus"
PROMETHEUS_DATASOURCE_NAME = "Exec watchdog Prometheus"
ALERTMANAGER_DATASOURCE_UID = "exec-watchdog-alertmanager"
ALERTMANAGER_DATASOURCE_NAME = "Exec watchdog Alertmanager"

REMEDIATION_ALERTS = "|".join(contract.REMEDIATION_ALERTS)
TOP_N = 10

# Annotation queries run on their own step, not the panel's interval.
ANNOTATION_STEP = "1m"

AGENT = 'agent=~"$agent"'
RUNTIME = f"{exporter_metrics.EXECUTION_RUNTIME}{{{AGENT}}}"
TIMEOUT = f"{exporter_metrics.EXECUTION_TIMEOUT}{{{AGENT}}}"
KNOWN = f"{exporter_metrics.EXECUTION_AGENT_KNOWN}{{{AGENT}}}"
COMPLETED = f"{exporter_metrics.EXECUTION_RECENTLY_COMPLETED}{{{AGENT}}}"
INFLIGHT = f"{exporter_metrics.EXECUTION_DISPATCH_INFLIGHT}{{{AGENT}}}"
STALE_OVERRUN = f"{exporter_metrics.EXECUTION_STALE_OVERRUN}{{{AGENT}}}"
SESSIONLESS = f"{exporter_metrics.EXECUTION_SESSIONLESS_RUNTIME}{{{AGENT}}}"
ALERTS = f'ALERTS{{alertname=~"{REMEDIATION_ALERTS}", {AGENT}}}'
FIRING = f'ALERTS{{alertname=~"{REMEDIATION_ALERTS}", alertstate="firing", {AGENT}}}'
REMEDIATIONS = remediator_metrics.REMEDIATIONS
RECOVERED = f'{REMEDIATIONS}{{outcome="recovered"}}'
RATIO = f"{RUNTIME} / {TIMEOUT}"
OLDEST = f"topk({TOP_N}, {RUNTIME})"
# The label set of one execution, for joining its series with the oldest ones.
EXECUTION = "on (agent, execution_id)"

Panels = list[Builder[model.Panel]]


def overview() -> Panels:
    return [
        single_stat(
            "Running executions",
            "Executions the database says are running (lease rows excluded), for the selected agents.",
            "short",
            Query(f"count({RUNTIME}) or vector(0)"),
        ),
        single_stat(
            "Unknown to their agent",
            "Running executions whose agent answered and does not know them: orphan candidates. "
            "The orphan alert fires once this has lasted its `for`.",
            "short",
            Query(f"count({KNOWN} == 0) or vector(0)"),
            steps=((None, "green"), (1, "orange")),
        ),
        single_stat(
            "Past their timeout",
            "Running executions whose runtime exceeds their effective timeout "
            "(schedule, else agent, else 3600 s): overdue candidates.",
            "short",
            Query(f"count({RUNTIME} > {TIMEOUT}) or vector(0)"),
            steps=((None, "green"), (1, "orange")),
        ),
        single_stat(
            "Remediation alerts firing",
            "ExecWatchdogExecutionOrphaned and ExecWatchdogExecutionOverdue alerts firing now; "
            "each one is a remediation request to the remediator unless it is silenced.",
            "short",
            Query(f"count({FIRING}) or vector(0)"),
            steps=((None, "green"), (1, "red")),
        ),
        single_stat(
            "Recovered in range",
            "Executions the remediator recovered (failed an orphan or terminated an overdue run) "
            "within the dashboard's time range.",
            "short",
            Query(f"round(sum(increase({RECOVERED}[$__range]))) or vector(0)"),
        ),
        single_stat(
            "Breaker",
            "Open while the remediator's breaker stops a runaway batch: it changes nothing and "
            "answers 503 (outcome breaker_open), so Alertmanager retries. It closes on its own "
            "after its window, or when an operator resets it.",
            "none",
            Query(f"max({remediator_metrics.BREAKER_OPEN})"),
            steps=((None, "green"), (1, "red")),
            mappings=BREAKER,
        ),
    ]


def executions() -> Panels:
    return [
        time_series(
            "Running executions by agent",
            "Executions in status running per agent, as the exporter reads them from the database.",
            "short",
            [Query(f"count by (agent) ({RUNTIME})", "{{agent}}")],
        ),
        time_series(
            f"Runtime against timeout, {TOP_N} nearest",
            "Runtime divided by the effective timeout for the executions closest to it; above 100 % "
            "(the dashed line) an execution is overdue and the overdue alert starts its `for`.",
            "percentunit",
            [Query(f"topk({TOP_N}, {RATIO})", "{{agent}} {{execution_id}}")],
            threshold_line=1,
        ),
        instant_table(
            f"Oldest {TOP_N} running executions",
            "The longest-running executions now, with their effective timeout, how far through it "
            "they are, and whether their agent still knows them (empty: the agent was not asked).",
            "s",
            [
                Query(OLDEST),
                Query(f"{TIMEOUT} and {EXECUTION} {OLDEST}"),
                Query(f"({RATIO}) and {EXECUTION} {OLDEST}"),
                Query(f"{KNOWN} and {EXECUTION} {OLDEST}"),
            ],
            transformations=[
                merge(),
                organize(
                    exclude=["Time", "__name__", "instance", "job"],
                    rename={
                        "Value #A": "Runtime",
                        "Value #B": "Timeout",
                        "Value #C": "Runtime / timeout",
                        "Value #D": "Known to agent",
                        "agent": "Agent",
                        "execution_id": "Execution",
                        "schedule_id": "Schedule",
                    },
                ),
            ],
            columns={
                "Runtime / timeout": column(unit="percentunit"),
                "Known to agent": column(unit="none", mappings=value_texts({0: ("No", "red"), 1: ("Yes", "green")})),
            },
            sort_by="Runtime",
            width=24,
        ),
        time_series(
            "Finished but unreported, or held in the backend",
            "Per agent: runs the agent lists as recently completed while the database still says "
            "running (their retained result is claimed), and runs a backend dispatcher still holds "
            "(in-flight marker alive, or markers unreadable for a young run: never orphans).",
            "short",
            [Query(f"count by (agent) ({COMPLETED} == 1)", "{{agent}} finished, unreported"),
             Query(f"count by (agent) ({INFLIGHT} == 1)", "{{agent}} held in the backend")],
            width=24,
        ),
        time_series(
            "Past their agent's timeout, or without a session",
            "Per agent: runs past their agent's own timeout (or of an agent unknown or soft-deleted), "
            "which Trinity's stale sweep fails once past the grace if the agent does not list them, and "
            "runs without a Claude session (silent launch failures). Both are held while the fleet "
            "guard fires.",
            "short",
            [Query(f"count by (agent, window) ({STALE_OVERRUN})", "{{agent}} past timeout ({{window}})"),
             Query(f"count by (agent) ({SESSIONLESS})", "{{agent}} without a session")],
            width=24,
        ),
    ]


def alerts_and_recoveries() -> Panels:
    return [
        time_series(
            "Orphan and overdue alerts",
            "Remediation alerts by name and state from Prometheus' ALERTS series: pending while "
            "their `for` runs, firing once Alertmanager is told.",
            "short",
            [Query(f"count by (alertname, alertstate) ({ALERTS})", "{{alertname}} {{alertstate}}")],
        ),
        instant_table(
            "Remediation alerts now",
            "Each pending or firing remediation alert with the execution it names. Silence one in "
            "Alertmanager (dashboard link: Silences) to pause its remediation.",
            "none",
            [Query(ALERTS)],
            transformations=[
                organize(
                    exclude=["Time", "Value", "__name__", "instance", "job"],
                    rename={
                        "alertname": "Alert",
                        "alertstate": "State",
                        "agent": "Agent",
                        "execution_id": "Execution",
                        "schedule_id": "Schedule",
                    },
                )
            ],
        ),
        time_series(
            "Recoveries by action and outcome",
            "What the remediator did with each remediation alert: recovered, would_recover (dry run), "
            "skipped after re-verifying, lost_race, retry, silenced or breaker_open.",
            "short",
            [
                Query(
                    f"sum by (action, outcome) (increase({REMEDIATIONS}[$__rate_interval]))",
                    "{{action}} {{outcome}}",
                )
            ],
            bars=True,
            stacked=True,
        ),
        time_series(
            "Time to recovery",
            "From the alert's startsAt to the recovered database row, by action: the detection "
            "delay (scrape, evaluation, `for`, group_wait) plus the remediator's own work.",
            "s",
            quantiles(remediator_metrics.TIME_TO_RECOVERY, "{{action}}"),
        ),
        time_series(
            "Detected after",
            "From the moment a run was lost to its recovered row, by action: an overdue run's start + "
            "timeout, an orphan's first scrape unknown to its agent, a claimed result's retained_at.",
            "s",
            quantiles(remediator_metrics.DETECTED_AFTER, "{{action}}"),
        ),
        time_series(
            "Runs unknown to their agent",
            "How long each running execution has been unknown to its agent (since the exporter's first "
            "scrape that found it so); the orphan alert fires once it lasts orphan_for.",
            "s",
            [Query(f"time() - min by (agent, execution_id) ({exporter_metrics.EXECUTION_UNKNOWN_SINCE})",
                   "{{agent}} {{execution_id}}")],
        ),
    ]


def agents() -> Panels:
    return [
        state_timeline(
            "Agents up",
            "Whether each agent answered GET /api/executions/running at the exporter's last scrape. "
            "A down agent's executions are never treated as orphans.",
            [Query(f"max by (agent) ({exporter_metrics.AGENT_UP}{{{AGENT}}})", "{{agent}}")],
            UP_DOWN,
        ),
        time_series(
            "Capacity slots used against limit",
            "Slots each agent holds in Redis (solid) against its max_parallel_tasks (dashed). "
            "Slots held by lost executions are what the watchdog gives back.",
            "short",
            [
                Query(f"max by (agent) ({exporter_metrics.AGENT_SLOTS_USED}{{{AGENT}}})", "{{agent}} used"),
                Query(f"max by (agent) ({exporter_metrics.AGENT_SLOTS_LIMIT}{{{AGENT}}})", "{{agent}} limit"),
            ],
        ).override_by_regexp(
            "/ limit$/",
            [model.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})],
        ),
        time_series(
            "Capacity slots near or past their TTL, leaked, and governor pause",
            "Share of its TTL (hash timeout + 300 s) each published slot has lived: above 1 it is expired "
            "and reclaimed. Leaked: slots whose execution is missing or finished. Paused: 1 while Trinity's "
            "governor:pause stops slot cleanup. Healthy young slots are not published.",
            "short",
            [
                Query(f"max by (agent, execution_id) ({exporter_metrics.SLOT_AGE}{{{AGENT}}} / "
                      f"{exporter_metrics.SLOT_TTL}{{{AGENT}}})", "{{agent}} {{execution_id}} TTL share"),
                Query(f"sum by (agent) ({exporter_metrics.SLOT_LEAKED}{{{AGENT}}})", "{{agent}} leaked"),
                Query(f"max ({exporter_metrics.SLOTS_PAUSED})", "paused"),
            ],
        ),
        time_series(
            "Agent registries by state",
            "Executions each agent's own process registry reports: running, pending (accepted, not "
            "yet spawned) and recently completed (the last 300 s).",
            "short",
            [
                Query(
                    f"max by (agent, state) ({exporter_metrics.AGENT_REGISTRY_EXECUTIONS}{{{AGENT}}})",
                    "{{agent}} {{state}}",
                )
            ],
        ),
        time_series(
            "Agent poll errors",
            "Failed polls of the agents' registries by reason (unreachable, timeout, unauthorized, "
            "bad_response); unauthorized usually means the exporter's AGENT_AUTH_SECRET is not the backend's.",
            "cps",
            [
                Query(
                    f"sum by (agent, reason) (rate({exporter_metrics.AGENT_POLL_ERRORS}{{{AGENT}}}"
                    "[$__rate_interval]))",
                    "{{agent}} {{reason}}",
                )
            ],
        ),
    ]


def health() -> Panels:
    return [
        state_timeline(
            "Watchdog components up",
            "Prometheus' scrape of the exporter and the remediator, and whether the exporter's "
            "executions query reached the database.",
            [
                Query(f'up{{job="{contract.EXPORTER_JOB}"}}', "exporter {{instance}}"),
                Query(f'up{{job="{contract.REMEDIATOR_JOB}"}}', "remediator {{instance}}"),
                Query(exporter_metrics.DATABASE_UP, "database via {{instance}}"),
            ],
            UP_DOWN,
        ),
        time_series(
            "Exporter scrape duration",
            "Wall time of the exporter's last collection (database query plus agent polls); it must "
            "stay well under the scrape timeout.",
            "s",
            [Query(exporter_metrics.SCRAPE_DURATION, "{{instance}}")],
        ),
        time_series(
            "Unreadable running rows",
            "Running rows the exporter cannot publish (unreadable started_at, missing or unsafe agent "
            "name): the watchdog cannot see these executions, so fix them in the database.",
            "short",
            [Query(exporter_metrics.INVALID_ROWS, "{{instance}}")],
        ),
        time_series(
            "Webhook responses by code",
            "The remediator's answers to Alertmanager: 2xx delivered, 503 asks Alertmanager to retry, "
            "4xx will never succeed (bad token or body).",
            "reqps",
            [
                Query(
                    f"sum by (code) (rate({remediator_metrics.REQUESTS}[$__rate_interval]))",
                    "{{code}}",
                )
            ],
        ),
        time_series(
            "Alerts received",
            "Alerts in the webhook notifications by status and remediation label, duplicates from "
            "repeats and HA Alertmanager pairs included.",
            "cps",
            [
                Query(
                    f"sum by (status, remediation) (rate({remediator_metrics.ALERTS}[$__rate_interval]))",
                    "{{status}} {{remediation}}",
                )
            ],
        ),
        time_series(
            "Remediation duration",
            "Time the remediator spent on one alert (re-verify, act, record), by action.",
            "s",
            quantiles(remediator_metrics.REMEDIATION_DURATION, "{{action}}"),
        ),
        time_series(
            "Pending finishes",
            "Recoveries whose slot release or announcement is not done yet (Redis or the relay "
            "was down); a later attempt finishes them, so this should return to zero.",
            "short",
            [Query(remediator_metrics.PENDING_FINISHES, "{{instance}}")],
        ),
        state_timeline(
            "Breaker state",
            "The remediator's breaker per instance: it opens after too many remediations in its "
            "window and stops all acting until the window has passed or an operator resets it.",
            [Query(f"max by (instance) ({remediator_metrics.BREAKER_OPEN})", "{{instance}}")],
            BREAKER,
        ),
    ]


def variables() -> list[dash.QueryVariable | dash.DatasourceVariable]:
    return [
        dash.DatasourceVariable("datasource")
        .label("Prometheus")
        .type("prometheus")
        .current(
            model.VariableOption(selected=True, text=PROMETHEUS_DATASOURCE_NAME, value=PROMETHEUS_DATASOURCE_UID)
        ),
        dash.DatasourceVariable("alertmanager")
        .label("Alertmanager")
        .type("alertmanager")
        .current(
            model.VariableOption(
                selected=True, text=ALERTMANAGER_DATASOURCE_NAME, value=ALERTMANAGER_DATASOURCE_UID
            )
        ),
        dash.QueryVariable("agent")
        .label("Agent")
        .datasource(PROMETHEUS)
        .query(f"label_values({exporter_metrics.AGENT_UP}, agent)")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(model.VariableOption(selected=True, text=["All"], value=["$__all"])),
    ]


class PrometheusAnnotation(dash.AnnotationQuery):
    """An annotation from a PromQL query, with the fields Grafana's Prometheus editor stores.

    The SDK's AnnotationQuery has `expr` but not `step`, `titleFormat` or `tagKeys`; they are
    added to its JSON here rather than patched into the output afterwards.
    """

    def __init__(self, *, step: str, title: str, tag_keys: str, text: str = "", value_is_time: bool = False) -> None:
        super().__init__()
        self._extra: dict[str, object] = {"step": step, "titleFormat": title, "tagKeys": tag_keys,
                                          "useValueForTime": value_is_time}
        if text:
            self._extra["textFormat"] = text

    def build(self) -> model.AnnotationQuery:
        return _AnnotationWithExtras(super().build(), self._extra)


class _AnnotationWithExtras(model.AnnotationQuery):
    def __init__(self, base: model.AnnotationQuery, extra: dict[str, object]) -> None:
        super().__init__(
            name=base.name,
            datasource=base.datasource,
            enable=base.enable,
            hide=base.hide,
            icon_color=base.icon_color,
            filter_val=base.filter_val,
            target=base.target,
            type_val=base.type_val,
            expr=base.expr,
        )
        self._extra = extra

    def to_json(self) -> dict[str, object]:
        return {**super().to_json(), **self._extra}


# One annotation per recovery, at the moment it was made (the series' value, in ms, is its time),
# whose text links to that execution's story on the remediator's live page. The remediator
# publishes each of its recent recoveries with the link as a label (story_url).
RECOVERY_STORY_TEXT = '<a href="{{story_url}}" target="_blank">{{action}} of {{execution_id}} on {{agent}}: ' \
    'evidence and timeline</a>'


def annotation_queries() -> list[PrometheusAnnotation]:
    return [
        PrometheusAnnotation(step=ANNOTATION_STEP, title="Recovered {{execution_id}}", tag_keys="action,agent",
                             text=RECOVERY_STORY_TEXT, value_is_time=True)
        .name("Recoveries")
        .datasource(PROMETHEUS)
        .enable(True)
        .hide(False)
        .icon_color("green")
        .expr(f"max by (agent, execution_id, action, story_url) "
              f"({remediator_metrics.RECOVERY_TIMESTAMP}{{{AGENT}}}) * 1000"),
        PrometheusAnnotation(step=ANNOTATION_STEP, title="Breaker open", tag_keys="instance")
        .name("Breaker open")
        .datasource(PROMETHEUS)
        .enable(True)
        .hide(False)
        .icon_color("red")
        .expr(f"max by (instance) ({remediator_metrics.BREAKER_OPEN}) > 0"),
    ]


def build() -> model.Dashboard:
    """The dashboard model; `exec_watchdog.grafana.builder.build` turns it into the committed JSON."""
    board = (
        dash.Dashboard(TITLE)
        .uid(UID)
        .description(
            "Executions an agent platform lost track of (orphaned or overdue), the alerts that "
            "flag them and the remediator's recoveries."
        )
        .tags(["exec-watchdog"])
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .link(
            dash.DashboardLink("Silences (pause remediation)")
            .type(model.DashboardLinkType.LINK)
            .icon("bolt")
            .tooltip("Silence a remediation alert in Alertmanager to stop its remediation")
            .url("/alerting/silences?alertmanager=${alertmanager:text}")
            .target_blank(True)
        )
    )
    for variable in variables():
        board = board.with_variable(variable)
    for annotation in annotation_queries():
        board = board.annotation(annotation)
    for panel in overview():
        board = board.with_panel(panel)
    for title, panels in (
        ("Executions", executions()),
        ("Alerts and recoveries", alerts_and_recoveries()),
        ("Agents and capacity", agents()),
        ("Timeouts from evidence", timeouts()),
        ("Cleanup backlog", cleanup()),
        ("Beside the platform's watchdog", beside_the_platform()),
        ("Watchdog health", health()),
    ):
        board = board.with_row(row(title))
        for panel in panels:
            board = board.with_panel(panel)
    built = board.build()
    # Grafana needs a unique id per panel (rows included); number them in layout order.
    for number, placed in enumerate(built.panels or [], start=1):
        placed.id_val = number
    return built

