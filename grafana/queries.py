"""Every PromQL expression in the committed dashboard, ready to send to a real Prometheus.

Grafana fills in variables before it queries; these functions do the same with fixed values, so a
test can run each expression against Prometheus (does it return data?) or feed it to promtool
(does it parse?). Reads only the committed JSON: no SDK needed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from exec_watchdog.grafana import DASHBOARD_PATH

# What Grafana would put in place of its built-in variables, with durations a short test run can
# fill; `agent` is the dashboard's "All" value.
DEFAULT_VALUES: Mapping[str, str] = {
    "__rate_interval": "1m",
    "__interval": "30s",
    "__range": "1h",
    "agent": ".*",
}

_VARIABLE = re.compile(r"\$(?:\{(?P<braced>\w+)(?::\w+)?\}|(?P<plain>\w+))")
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\s*\)$", re.DOTALL)


def load_dashboard(path: Path = DASHBOARD_PATH) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a dashboard is a JSON object, got {type(data).__name__}")
    return data


def raw_expressions(board: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expression) for every PromQL expression, variables left in: panel targets,
    Prometheus annotations and the metric selector of `label_values(...)` query variables."""
    for panel in board.get("panels", []):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield f"panel {panel['title']!r} target {target['refId']}", target["expr"]
    for annotation in board.get("annotations", {}).get("list", []):
        if annotation.get("datasource", {}).get("type") == "prometheus" and "expr" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["expr"]
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        match = _LABEL_VALUES.match(query.strip()) if isinstance(query, str) else None
        if match is None:
            raise ValueError(f"variable {variable['name']!r}: expected label_values(selector, label), got {query!r}")
        yield f"variable {variable['name']!r}", match["selector"].strip()


def substitute(expr: str, values: Mapping[str, str] = DEFAULT_VALUES) -> str:
    """Replace `$name` and `${name}` as Grafana would; an unknown variable is an error, not a guess."""

    def replace(match: re.Match[str]) -> str:
        name = match["braced"] or match["plain"]
        if name not in values:
            raise ValueError(f"no value for Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def labelled_queries(
    values: Mapping[str, str] = DEFAULT_VALUES, path: Path = DASHBOARD_PATH
) -> list[tuple[str, str]]:
    """(where, expression) pairs with variables substituted, in dashboard order."""
    return [(where, substitute(expr, values)) for where, expr in raw_expressions(load_dashboard(path))]


def all_queries(values: Mapping[str, str] = DEFAULT_VALUES, path: Path = DASHBOARD_PATH) -> list[str]:
    """Every distinct PromQL expression in the dashboard, variables substituted, in dashboard order."""
    return list(dict.fromkeys(expr for _, expr in labelled_queries(values, path)))
