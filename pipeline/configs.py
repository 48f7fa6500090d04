"""prometheus.yml and alertmanager.yml for the pipeline, generated from one alerts/ profile.

The rule file and the Alertmanager routing come from :mod:`exec_watchdog.alerts.render`, so the demo and the
end-to-end tests run exactly what a deployment of that profile runs; only addresses differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from exec_watchdog.alerts.profiles import prometheus_global
from exec_watchdog.alerts.render import render_alertmanager_config
from exec_watchdog.alerts.rules import REPLICA_LABEL
from exec_watchdog.common import contract


def prometheus_config(profile: str, rule_file: Path, exporters: Sequence[str], remediators: Sequence[str],
                      alertmanagers: Sequence[str], replica: str | None = None) -> str:
    """prometheus.yml: scrape the exporter (every shard) and the remediators, evaluate the rules,
    notify every Alertmanager (an HA pair must get every alert from Prometheus itself). Targets are
    host:port.

    ``replica`` makes this server one of an HA set: its series carry ``replica="<name>"`` as an
    external label, and the label is dropped from the alerts it sends, so the alerts of every
    replica are identical and Alertmanager deduplicates them."""
    config: dict[str, Any] = {
        "global": {**prometheus_global(profile), **({"external_labels": {REPLICA_LABEL: replica}} if replica else {})},
        "rule_files": [str(rule_file)],
        "alerting": {"alertmanagers": [{
            "api_version": "v2",
            "timeout": "5s",
            "static_configs": [{"targets": list(alertmanagers)}],
        }]},
        "scrape_configs": [
            {"job_name": contract.EXPORTER_JOB, "static_configs": [{"targets": list(exporters)}]},
            {"job_name": contract.REMEDIATOR_JOB, "static_configs": [{"targets": list(remediators)}]},
        ],
    }
    if replica:
        config["alerting"]["alert_relabel_configs"] = [{"action": "labeldrop", "regex": REPLICA_LABEL}]
    return yaml.safe_dump(config, sort_keys=False)


def alertmanager_config(profile: str, webhook_urls: Sequence[str], token_file: Path) -> str:
    """alertmanager.yml from alerts/, with one webhook per remediator replica."""
    return render_alertmanager_config(list(webhook_urls), str(token_file), profile)
