"""The Grafana dashboard and provisioning: valid, current, and pointing at things that exist.

No Grafana runs here (no package of it is installable on this machine), so validity is checked
three ways: the committed JSON decodes into grafana-foundation-sdk's dashboard model without
losing fields, it satisfies a focused JSON schema of what Grafana and our style need, and every
PromQL expression passes the real `promtool check rules`.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from exec_watchdog.alerts import timeout_rules
from exec_watchdog.common import contract
from exec_watchdog.common.contract import ExporterMetric as exporter_metrics
from exec_watchdog.common.contract import RemediatorMetric as remediator_metrics
from exec_watchdog.common.contract import ShadowMetric as shadow_metrics
from exec_watchdog.exporter import families as exporter_families
from exec_watchdog.grafana import DASHBOARD_PATH, PROVISIONING_DIR, queries
from exec_watchdog.grafana.builder import build, dashboard

ROOT = Path(__file__).resolve().parent.parent
DATASOURCES_FILE = PROVISIONING_DIR / "datasources" / "exec-watchdog.yml"
DASHBOARDS_FILE = PROVISIONING_DIR / "dashboards" / "exec-watchdog.yml"
GRAFANA_README = ROOT / "grafana" / "README.md"
CONTRACTS = ROOT / "docs" / "contracts.md"

# Grafana's environment-variable syntax in provisioning files: $NAME or ${NAME}.
ENV_REFERENCE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    return queries.load_dashboard()


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in board["panels"] if panel["type"] != "row"]


# ---------------------------------------------------------------------------------------------
# A focused schema of Grafana's dashboard model (schemaVersion 36+): the fields Grafana needs to
# load what we use, plus what the dashboard style asks (description and unit on every panel).

_TEXT = {"type": "string", "minLength": 1}
_DURATION = {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h|d|w|y)$"}
_DATASOURCE_REF = {
    "type": "object",
    "required": ["type", "uid"],
    "properties": {"type": _TEXT, "uid": _TEXT},
}
_GRID_POS = {
    "type": "object",
    "required": ["h", "w", "x", "y"],
    "additionalProperties": False,
    "properties": {
        "h": {"type": "integer", "minimum": 1},
        "w": {"type": "integer", "minimum": 1, "maximum": 24},
        "x": {"type": "integer", "minimum": 0, "maximum": 23},
        "y": {"type": "integer", "minimum": 0},
    },
}
# Grafana unit ids we may use; a typo ("seconds") would render raw numbers.
_UNITS = ["none", "short", "percent", "percentunit", "s", "ms", "reqps", "ops", "cps", "bytes", "bool_yes_no"]
_TARGET = {
    "type": "object",
    "required": ["refId", "expr", "datasource"],
    "properties": {
        "refId": {"type": "string", "pattern": "^[A-Z]$"},
        "expr": _TEXT,
        "datasource": _DATASOURCE_REF,
        "legendFormat": {"type": "string"},
        "instant": {"type": "boolean"},
        "range": {"type": "boolean"},
        "format": {"enum": ["time_series", "table", "heatmap"]},
    },
}
_FIELD_CONFIG = {
    "type": "object",
    "required": ["defaults", "overrides"],
    "properties": {
        "defaults": {
            "type": "object",
            "required": ["unit"],
            "properties": {"unit": {"enum": _UNITS}, "mappings": {"type": "array"}},
        },
        "overrides": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["matcher", "properties"],
                "properties": {
                    "matcher": {
                        "type": "object",
                        "required": ["id", "options"],
                        "properties": {"id": {"enum": ["byName", "byRegexp", "byType", "byFrameRefID"]}},
                    },
                    "properties": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "object", "required": ["id"], "properties": {"id": _TEXT}},
                    },
                },
            },
        },
    },
}
_PANEL = {
    "type": "object",
    "required": [
        "id", "type", "title", "description", "gridPos", "datasource", "targets", "fieldConfig", "options",
    ],
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "type": {"enum": ["timeseries", "stat", "table", "state-timeline"]},
        "title": _TEXT,
        "description": _TEXT,
        "gridPos": _GRID_POS,
        "datasource": _DATASOURCE_REF,
        "targets": {"type": "array", "minItems": 1, "items": _TARGET},
        "fieldConfig": _FIELD_CONFIG,
        "options": {"type": "object"},
        "transformations": {
            "type": "array",
            "items": {"type": "object", "required": ["id", "options"], "properties": {"id": _TEXT}},
        },
    },
}
_ROW = {
    "type": "object",
    "required": ["id", "type", "title", "gridPos", "collapsed", "panels"],
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "type": {"const": "row"},
        "title": _TEXT,
        "gridPos": _GRID_POS,
        # An open row's panels follow it at the top level; a row holds panels only when collapsed.
        "collapsed": {"const": False},
        "panels": {"type": "array", "maxItems": 0},
    },
}
_VARIABLE = {
    "type": "object",
    "required": ["name", "type", "label", "query", "current", "hide"],
    "properties": {
        "name": {"type": "string", "pattern": r"^\w+$"},
        "type": {"enum": ["datasource", "query"]},
        "label": _TEXT,
        "query": _TEXT,
        "hide": {"enum": [0, 1, 2]},
        "current": {"type": "object", "required": ["text", "value"]},
    },
    "if": {"properties": {"type": {"const": "query"}}},
    "then": {"required": ["datasource", "refresh", "includeAll", "multi"]},
}
_ANNOTATION = {
    "type": "object",
    "required": ["name", "datasource", "enable", "iconColor", "expr", "step", "titleFormat"],
    "properties": {
        "name": _TEXT,
        "datasource": _DATASOURCE_REF,
        "enable": {"type": "boolean"},
        "hide": {"type": "boolean"},
        "iconColor": _TEXT,
        "expr": _TEXT,
        "step": _DURATION,
        "titleFormat": _TEXT,
        "tagKeys": {"type": "string"},
        "useValueForTime": {"type": "boolean"},
    },
}
DASHBOARD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": [
        "uid", "title", "description", "schemaVersion", "panels", "templating", "annotations",
        "time", "tags", "editable", "refresh", "timezone",
    ],
    "properties": {
        # Grafana accepts at most 40 characters of letters, digits, - and _ in a uid.
        "uid": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,40}$"},
        "title": _TEXT,
        "description": _TEXT,
        "schemaVersion": {"type": "integer", "minimum": 36},
        "tags": {"type": "array", "items": _TEXT},
        "editable": {"type": "boolean"},
        "refresh": {"type": "string"},
        "timezone": {"enum": ["browser", "utc", ""]},
        "time": {
            "type": "object",
            "required": ["from", "to"],
            "properties": {"from": _TEXT, "to": _TEXT},
        },
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "if": {"properties": {"type": {"const": "row"}}, "required": ["type"]},
                "then": _ROW,
                "else": _PANEL,
            },
        },
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {"list": {"type": "array", "items": _VARIABLE}},
        },
        "annotations": {
            "type": "object",
            "required": ["list"],
            "properties": {"list": {"type": "array", "items": _ANNOTATION}},
        },
        "links": {
            "type": "array",
            "items": {"type": "object", "required": ["title", "type", "url"], "properties": {"title": _TEXT}},
        },
    },
}


def schema_errors(board: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(DASHBOARD_SCHEMA)
    return [
        f"{'/'.join(str(part) for part in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(board)
    ]


def test_the_schema_itself_is_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(DASHBOARD_SCHEMA)


def test_dashboard_satisfies_the_dashboard_schema(board: dict[str, Any]) -> None:
    assert schema_errors(board) == []


def _drop_description(board: dict[str, Any]) -> None:
    del _panels(board)[0]["description"]


def _drop_unit(board: dict[str, Any]) -> None:
    del _panels(board)[-1]["fieldConfig"]["defaults"]["unit"]


def _misspell_unit(board: dict[str, Any]) -> None:
    _panels(board)[0]["fieldConfig"]["defaults"]["unit"] = "seconds"


def _long_uid(board: dict[str, Any]) -> None:
    board["uid"] = "x" * 41


def _overflow_grid(board: dict[str, Any]) -> None:
    _panels(board)[0]["gridPos"]["w"] = 25


def _target_without_expr(board: dict[str, Any]) -> None:
    del _panels(board)[0]["targets"][0]["expr"]


@pytest.mark.parametrize(
    "mutate",
    [_drop_description, _drop_unit, _misspell_unit, _long_uid, _overflow_grid, _target_without_expr],
)
def test_the_schema_rejects_a_broken_dashboard(
    board: dict[str, Any], mutate: Callable[[dict[str, Any]], None]
) -> None:
    broken = copy.deepcopy(board)
    mutate(broken)
    assert schema_errors(broken), f"{mutate.__name__} went unnoticed"


def test_dashboard_decodes_into_the_sdk_model_without_losing_fields(board: dict[str, Any]) -> None:
    """Only the Prometheus annotation fields the SDK's AnnotationQuery lacks may be dropped."""
    decoded = json.loads(json.dumps(Dashboard.from_json(board), cls=JSONEncoder))
    prometheus_annotation_fields = {"step", "titleFormat", "tagKeys", "useValueForTime", "textFormat"}
    expected = copy.deepcopy(board)
    for annotation in expected["annotations"]["list"]:
        for field in prometheus_annotation_fields:
            annotation.pop(field, None)
    assert decoded == expected


def test_every_panel_has_a_title_description_and_unit(board: dict[str, Any]) -> None:
    missing = [
        panel.get("title", f"panel {panel['id']}")
        for panel in _panels(board)
        if not (panel.get("title") and panel.get("description") and panel["fieldConfig"]["defaults"].get("unit"))
    ]
    assert missing == []


def test_panel_ids_are_unique_and_panels_do_not_overlap(board: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    taken: dict[tuple[int, int], str] = {}
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']!r} is wider than the grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = panel["title"]


def test_ref_ids_are_unique_within_each_panel(board: dict[str, Any]) -> None:
    for panel in _panels(board):
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_every_query_follows_the_datasource_variable(board: dict[str, Any]) -> None:
    """No hard-coded data source: switching $datasource switches every panel and annotation."""
    variable = {"type": "prometheus", "uid": "${datasource}"}
    for panel in _panels(board):
        assert panel["datasource"] == variable, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == variable, panel["title"]
    for annotation in board["annotations"]["list"]:
        assert annotation["datasource"] == variable, annotation["name"]
    for query_variable in (v for v in board["templating"]["list"] if v["type"] == "query"):
        assert query_variable["datasource"] == variable, query_variable["name"]


def test_dashboard_has_a_stable_uid_and_the_datasource_variables(board: dict[str, Any]) -> None:
    assert board["uid"] == "exec-watchdog"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["alertmanager"]["type"] == "datasource"
    assert variables["alertmanager"]["query"] == "alertmanager"


def test_dashboard_links_use_only_defined_variables(board: dict[str, Any]) -> None:
    names = {v["name"] for v in board["templating"]["list"]}
    for link in board["links"]:
        used = {match[0] or match[1] for match in re.findall(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", link["url"])}
        assert used <= names, link["title"]


# ---------------------------------------------------------------------------------------------
# Dashboards as code: the committed JSON is exactly what the generator writes.


def test_committed_json_is_the_generator_output_byte_for_byte() -> None:
    committed = DASHBOARD_PATH.read_text(encoding="utf-8")
    assert committed == build.render(), \
        "grafana/dashboards/exec-watchdog.json is stale: run `python -m exec_watchdog.grafana.builder.build`"


def test_rendered_json_has_sorted_keys_and_two_space_indent() -> None:
    text = build.render()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_build_check_fails_on_a_stale_file_and_passes_after_writing(tmp_path: Path) -> None:
    output = tmp_path / "exec-watchdog.json"
    output.write_text("{}\n", encoding="utf-8")
    assert build.main(["--check", "--output", str(output)]) == 1
    assert build.main(["--output", str(output)]) == 0
    assert build.main(["--check", "--output", str(output)]) == 0
    assert output.read_text(encoding="utf-8") == build.render()


def test_panels_are_laid_out_top_to_bottom_in_id_order(board: dict[str, Any]) -> None:
    positions = [(panel["gridPos"]["y"], panel["gridPos"]["x"]) for panel in board["panels"]]
    assert positions == sorted(positions)


# ---------------------------------------------------------------------------------------------
# PromQL: every expression parses (real promtool), and uses only metrics that are published.


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: run `make system-deps` (Debian package prometheus)")
    return path


def _check_rules(tmp_path: Path, expressions: list[tuple[str, str]]) -> subprocess.CompletedProcess[str]:
    """Write each expression as a recording rule and let promtool parse the file."""
    rules = {
        "groups": [
            {
                "name": "grafana-dashboard-queries",
                "rules": [
                    {"record": f"exec_watchdog:grafana_query_{index}", "expr": expr}
                    for index, (_, expr) in enumerate(expressions)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    return subprocess.run(
        [_promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


def test_every_dashboard_expression_parses_with_promtool(tmp_path: Path) -> None:
    expressions = queries.labelled_queries()
    result = _check_rules(tmp_path, expressions)
    where = "\n".join(f"  exec_watchdog:grafana_query_{i}: {w}" for i, (w, _) in enumerate(expressions))
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\nrules:\n{where}"
    assert f"SUCCESS: {len(expressions)} rules found" in result.stdout


def test_promtool_check_rejects_a_broken_expression(tmp_path: Path) -> None:
    result = _check_rules(tmp_path, [("broken", "sum by (agent (exec_watchdog_agent_up)")])
    assert result.returncode != 0


_KEYWORDS = {
    "and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "inf", "nan", "atan2",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a small lexer; promtool has no such command)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)  # string literals
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    # Label lists of grouping and matching modifiers.
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = match[1], match[2]
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def test_metric_name_lexer_finds_selectors_and_skips_functions_labels_and_keywords() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (le, action) (rate(a_bucket{job="x", le=~"1e3"}[5m]))) '
        "/ on (agent) group_left (state) b:rule > bool 1e3 or vector(0) unless c offset 5m"
    )
    assert metric_names(expr) == {"a_bucket", "b:rule", "c"}


def _published() -> set[str]:
    names = set(exporter_families.ALL_NAMES) | set(remediator_metrics.ALL) | set(shadow_metrics.ALL)
    histogram_series = {f"{name}{suffix}" for name in names for suffix in ("_bucket", "_sum", "_count")}
    # Recorded by the rules (alerts/timeout_rules.py), from the exporter's series.
    return names | histogram_series | {"ALERTS", "up"} | set(timeout_rules.RECORDED)


def test_every_metric_the_dashboard_uses_is_published() -> None:
    unknown = {
        where: sorted(metric_names(expr) - _published())
        for where, expr in queries.labelled_queries()
        if metric_names(expr) - _published()
    }
    assert unknown == {}


def test_every_published_metric_has_a_place_on_the_dashboard() -> None:
    """A new metric without a panel is probably forgotten; build_info is deliberately left off."""
    used = set().union(*(metric_names(expr) for expr in queries.all_queries()))
    published = set(exporter_families.ALL_NAMES) | set(remediator_metrics.ALL) | set(shadow_metrics.ALL)
    missing = {name for name in published if name not in used and f"{name}_bucket" not in used}
    assert missing == {exporter_metrics.BUILD_INFO}


def test_remediation_alert_regex_matches_exactly_the_remediated_alerts_of_the_contract() -> None:
    contract = CONTRACTS.read_text(encoding="utf-8")
    alert_names = set(re.findall(r"`(ExecWatchdog\w+)`", contract))
    remediated = {"ExecWatchdogExecutionOrphaned", "ExecWatchdogExecutionOverdue",
                  "ExecWatchdogExecutionCompletedUnreported", "ExecWatchdogSlotExpired",
                  "ExecWatchdogSlotExpiredAgentUnreachable", "ExecWatchdogSlotLeaked",
                  "ExecWatchdogSkippedExecutionUnfinalized", "ExecWatchdogQueuedExecutionExpired",
                  "ExecWatchdogActivityStale", "ExecWatchdogExecutionStale",
                  "ExecWatchdogExecutionNoSession"}
    assert remediated | {"ExecWatchdogExecutionStuck"} <= alert_names
    matched = {name for name in alert_names if re.fullmatch(dashboard.REMEDIATION_ALERTS, name)}
    assert matched == remediated


def test_remediation_alert_regex_matches_exactly_the_remediated_alert_rules() -> None:

    matched = {name for name in contract.ALERTS if re.fullmatch(dashboard.REMEDIATION_ALERTS, name)}
    assert matched == {contract.ORPHANED, contract.OVERDUE, contract.COMPLETED_UNREPORTED, *contract.SLOT_ALERTS,
                       *contract.CLEANUP_ALERTS, contract.STALE, contract.NO_SESSION}


def test_job_names_appear_only_in_up_selectors(board: dict[str, Any]) -> None:
    for where, expr in queries.labelled_queries():
        for job in re.findall(r'job="([^"]*)"', expr):
            assert job in {contract.EXPORTER_JOB, contract.REMEDIATOR_JOB}, where


# ---------------------------------------------------------------------------------------------
# all_queries(): what the end-to-end test sends to the real Prometheus.


def test_all_queries_substitutes_every_grafana_variable() -> None:
    expressions = queries.all_queries()
    assert expressions
    assert [expr for expr in expressions if "$" in expr] == []
    assert all(expr == expr.strip() for expr in expressions)


def test_all_queries_covers_panels_annotations_and_variables(board: dict[str, Any]) -> None:
    expressions = queries.all_queries()
    for panel in _panels(board):
        for target in panel["targets"]:
            assert queries.substitute(target["expr"]) in expressions, panel["title"]
    for annotation in board["annotations"]["list"]:
        assert queries.substitute(annotation["expr"]) in expressions, annotation["name"]
    assert exporter_metrics.AGENT_UP in expressions  # from label_values() of the agent variable
    assert len(expressions) == len(set(expressions))


def test_substitute_fills_rate_interval_range_and_all_agents() -> None:
    expr = 'increase(x{agent=~"$agent"}[$__rate_interval]) + increase(x[${__range}])'
    assert queries.substitute(expr) == 'increase(x{agent=~".*"}[1m]) + increase(x[1h])'
    assert queries.substitute("rate(x[$__rate_interval])", {"__rate_interval": "5s"}) == "rate(x[5s])"


def test_substitute_rejects_an_unknown_variable() -> None:
    with pytest.raises(ValueError, match=r"\$instance"):
        queries.substitute('up{instance="$instance"}')


def test_a_variable_query_that_is_not_label_values_is_a_clear_error(board: dict[str, Any]) -> None:
    odd = copy.deepcopy(board)
    odd["templating"]["list"].append({"name": "x", "type": "query", "query": "query_result(up)"})
    with pytest.raises(ValueError, match="label_values"):
        list(queries.raw_expressions(odd))


# ---------------------------------------------------------------------------------------------
# Provisioning: valid YAML, the right keys, and pointing at what exists.


def _yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


@pytest.fixture(scope="module")
def datasources() -> dict[str, dict[str, Any]]:
    data = _yaml(DATASOURCES_FILE)
    assert data["apiVersion"] == 1
    listed = data["datasources"]
    uids = [source["uid"] for source in listed]
    assert len(uids) == len(set(uids))
    return {source["uid"]: source for source in listed}


def test_datasources_are_a_prometheus_and_an_alertmanager_from_the_environment(
    datasources: dict[str, dict[str, Any]],
) -> None:
    prometheus = datasources[dashboard.PROMETHEUS_DATASOURCE_UID]
    assert prometheus["type"] == "prometheus"
    assert prometheus["url"] == "${PROMETHEUS_URL}"
    alertmanager = datasources[dashboard.ALERTMANAGER_DATASOURCE_UID]
    assert alertmanager["type"] == "alertmanager"
    assert alertmanager["url"] == "${ALERTMANAGER_URL}"
    assert alertmanager["jsonData"] == {"implementation": "prometheus", "handleGrafanaManagedAlerts": False}
    for source in datasources.values():
        assert source["access"] == "proxy"
        assert source["name"]
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", source["uid"])


def test_dashboard_variable_defaults_are_provisioned_datasources(
    board: dict[str, Any], datasources: dict[str, dict[str, Any]]
) -> None:
    defaults = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert defaults
    for variable in defaults:
        uid = variable["current"]["value"]
        assert uid in datasources, f"${variable['name']} defaults to {uid!r}, which is not provisioned"
        assert datasources[uid]["type"] == variable["query"]
        assert datasources[uid]["name"] == variable["current"]["text"]


def test_dashboard_provider_path_holds_the_dashboard_and_nothing_else(tmp_path: Path) -> None:
    data = _yaml(DASHBOARDS_FILE)
    assert data["apiVersion"] == 1
    (provider,) = data["providers"]
    assert provider["type"] == "file"
    assert provider["name"]
    # Expand as Grafana does, with the value grafana/README.md tells operators to set.
    environment = {"EXEC_WATCHDOG_DASHBOARDS_DIR": str(DASHBOARD_PATH.parent)}
    path = Path(ENV_REFERENCE.sub(lambda m: environment[m[1] or m[2]], provider["options"]["path"]))
    assert path.is_dir()
    assert sorted(p.name for p in path.glob("*.json")) == [DASHBOARD_PATH.name]


def _environment_references(path: Path) -> set[str]:
    """Variables referenced in the file's values (Grafana expands values, not comments)."""
    return {
        match[0] or match[1]
        for text in _iter_strings(_yaml(path))
        for match in ENV_REFERENCE.findall(text)
    }


def test_every_environment_variable_of_the_provisioning_is_documented() -> None:
    used = _environment_references(DATASOURCES_FILE) | _environment_references(DASHBOARDS_FILE)
    assert used == {"PROMETHEUS_URL", "ALERTMANAGER_URL", "EXEC_WATCHDOG_DASHBOARDS_DIR"}
    readme = GRAFANA_README.read_text(encoding="utf-8")
    assert [name for name in sorted(used) if name not in readme] == []


def test_provisioning_folder_holds_exactly_the_two_files() -> None:
    files = sorted(p.relative_to(PROVISIONING_DIR).as_posix() for p in PROVISIONING_DIR.rglob("*") if p.is_file())
    assert files == ["dashboards/exec-watchdog.yml", "datasources/exec-watchdog.yml"]


def _iter_strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _iter_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _iter_strings(item)


def test_provisioning_holds_no_secrets_or_fixed_hosts() -> None:
    """URLs come from the environment, so one file serves every deployment."""
    for path in (DATASOURCES_FILE, DASHBOARDS_FILE):
        for text in _iter_strings(_yaml(path)):
            assert "://" not in text, f"{path.name}: {text!r}"
        assert "secureJsonData" not in path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# What the key panels show, evaluated by the real PromQL engine (`promtool test rules`) on a small
# synthetic platform: three running executions on two agents, one orphan, one overdue.

_EXPORTER = 'job="exec-watchdog-exporter", instance="exporter:9185"'
_E1 = f'agent="a1", execution_id="e1", schedule_id="s1", {_EXPORTER}'
_E2 = f'agent="a2", execution_id="e2", schedule_id="s2", {_EXPORTER}'
_E3 = f'agent="a2", execution_id="e3", schedule_id="__manual__", {_EXPORTER}'
_RECOVERY = 'action="fail_orphan", agent="a1", execution_id="e1", story_url="http://remediator:9464/#execution=e1"'
_INPUT_SERIES = [
    # e1: young but unknown to its agent (orphan); e2: past its timeout (overdue); e3: fine and
    # not asked about (its agent_known series is absent).
    (f"exec_watchdog_execution_runtime_seconds{{{_E1}}}", "100+60x10"),
    (f"exec_watchdog_execution_runtime_seconds{{{_E2}}}", "3500+60x10"),
    (f"exec_watchdog_execution_runtime_seconds{{{_E3}}}", "10+60x10"),
    (f"exec_watchdog_execution_timeout_seconds{{{_E1}}}", "3600x10"),
    (f"exec_watchdog_execution_timeout_seconds{{{_E2}}}", "3600x10"),
    (f"exec_watchdog_execution_timeout_seconds{{{_E3}}}", "1200x10"),
    (f"exec_watchdog_execution_agent_known{{{_E1}}}", "0x10"),
    (f"exec_watchdog_execution_agent_known{{{_E2}}}", "1x10"),
    ('ALERTS{alertname="ExecWatchdogExecutionOrphaned", alertstate="firing", agent="a1", execution_id="e1"}',
     "1x10"),
    ('ALERTS{alertname="ExecWatchdogExecutionOverdue", alertstate="pending", agent="a2", execution_id="e2"}',
     "1x10"),
    # Never remediated, so never counted as a remediation alert.
    ('ALERTS{alertname="ExecWatchdogExecutionStuck", alertstate="firing", agent="a2", execution_id="e2"}',
     "1x10"),
    ('exec_watchdog_remediator_remediations_total{action="fail_orphan", outcome="recovered", '
     'job="exec-watchdog-remediator", instance="remediator:8080"}', "0 0 0 1 1 1 1 1 1 1 1"),
    # The remediator publishes that recovery (made at unix time 1764400000.5) for a while, then drops it.
    (f'exec_watchdog_remediator_recovery_timestamp_seconds{{{_RECOVERY}, job="exec-watchdog-remediator", '
     'instance="remediator:8080"}', "_ _ _ 1764400000.5 1764400000.5 1764400000.5 stale"),
]


def _expr_test(where: str, eval_time: str, samples: list[tuple[str, float]]) -> dict[str, Any]:
    expressions = dict(queries.labelled_queries())
    return {
        "expr": expressions[where],
        "eval_time": eval_time,
        "exp_samples": [{"labels": labels, "value": value} for labels, value in samples],
    }


def test_key_panels_show_the_right_numbers_on_a_small_platform(tmp_path: Path) -> None:
    expr_tests = [
        _expr_test("panel 'Running executions' target A", "10m", [("{}", 3)]),
        _expr_test("panel 'Unknown to their agent' target A", "10m", [("{}", 1)]),
        _expr_test("panel 'Past their timeout' target A", "10m", [("{}", 1)]),
        _expr_test("panel 'Remediation alerts firing' target A", "10m", [("{}", 1)]),
        _expr_test("panel 'Recovered in range' target A", "10m", [("{}", 1)]),
        _expr_test(
            "panel 'Running executions by agent' target A", "10m", [('{agent="a1"}', 1), ('{agent="a2"}', 2)]
        ),
        _expr_test(
            "panel 'Orphan and overdue alerts' target A",
            "10m",
            [
                ('{alertname="ExecWatchdogExecutionOrphaned", alertstate="firing"}', 1),
                ('{alertname="ExecWatchdogExecutionOverdue", alertstate="pending"}', 1),
            ],
        ),
        # The table's columns join onto the oldest executions by (agent, execution_id).
        _expr_test(
            "panel 'Oldest 10 running executions' target B",
            "10m",
            [
                (f"exec_watchdog_execution_timeout_seconds{{{_E1}}}", 3600),
                (f"exec_watchdog_execution_timeout_seconds{{{_E2}}}", 3600),
                (f"exec_watchdog_execution_timeout_seconds{{{_E3}}}", 1200),
            ],
        ),
        _expr_test(
            "panel 'Oldest 10 running executions' target C",
            "10m",
            [(f"{{{_E1}}}", 700 / 3600), (f"{{{_E2}}}", 4100 / 3600), (f"{{{_E3}}}", 610 / 1200)],
        ),
        _expr_test(
            "panel 'Oldest 10 running executions' target D",
            "10m",
            [
                (f"exec_watchdog_execution_agent_known{{{_E1}}}", 0),
                (f"exec_watchdog_execution_agent_known{{{_E2}}}", 1),
            ],
        ),
        # One annotation per recovery: its series carries the story link, its value the moment in ms
        # (Grafana's "series value as timestamp"), while the remediator publishes it.
        _expr_test("annotation 'Recoveries'", "2m", []),
        _expr_test("annotation 'Recoveries'", "4m", [(f"{{{_RECOVERY}}}", 1764400000500)]),
        _expr_test("annotation 'Recoveries'", "7m", []),
    ]
    test_file = tmp_path / "dashboard-panels.test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": [{"series": s, "values": v} for s, v in _INPUT_SERIES],
                        "promql_expr_test": expr_tests,
                    }
                ],
            },
            sort_keys=False,
        ),
        encoding="utf-8",
    )
    result = subprocess.run(
        [_promtool(), "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_recoveries_annotation_marks_each_recovery_at_its_time_and_links_to_its_story(board: dict[str, Any]) -> None:
    [recoveries] = [a for a in board["annotations"]["list"] if a["name"] == "Recoveries"]
    assert recoveries["useValueForTime"] is True  # the series' value (ms) is the recovery's moment
    assert 'href="{{story_url}}"' in recoveries["textFormat"]
    assert "story_url" in recoveries["expr"] and remediator_metrics.RECOVERY_TIMESTAMP in recoveries["expr"]
