"""Regenerate the prometheus-operator JSON schemas in this folder (run by hand, not by the tests).

The schemas come from ``cloudcoil.models.prometheus_operator``, pydantic models generated from
the operator's CRDs. That package is not a test dependency (it installs a pytest plugin that
needs extra packages), so run this in a throwaway virtualenv::

    python3 -m venv /tmp/schemas && /tmp/schemas/bin/pip install 'cloudcoil.models.prometheus_operator==0.80.1.0'
    /tmp/schemas/bin/python tests/schemas/generate_prometheus_operator.py

Descriptions are dropped (size); tests/test_deploy.py forbids undeclared properties when it loads them.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PACKAGE = "cloudcoil.models.prometheus_operator"


def _without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_descriptions(v) for k, v in node.items() if k not in ("description", "title")
                or not isinstance(v, str)}
    if isinstance(node, list):
        return [_without_descriptions(v) for v in node]
    return node


def main() -> None:
    from cloudcoil.models.prometheus_operator import v1, v1alpha1

    models = {"servicemonitor-monitoring-v1": v1.ServiceMonitor,
              "prometheusrule-monitoring-v1": v1.PrometheusRule,
              "alertmanagerconfig-monitoring-v1alpha1": v1alpha1.AlertmanagerConfig}
    for name, model in models.items():
        schema = _without_descriptions(model.model_json_schema(by_alias=True))
        schema["$comment"] = f"Generated from {PACKAGE} {version(PACKAGE)} by {Path(__file__).name}"
        (HERE / f"{name}.json").write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
