"""Grafana dashboards and provisioning for exec-watchdog.

The dashboard is code (``grafana/builder/dashboard.py``, built with grafana-foundation-sdk); the JSON that
Grafana loads is its committed output, regenerated with ``python -m exec_watchdog.grafana.builder.build``.
"""

from __future__ import annotations

from pathlib import Path

# resolve(): in a checkout exec_watchdog/grafana is a link to this folder; paths name the folder itself.
HERE = Path(__file__).resolve().parent
DASHBOARD_PATH = HERE / "dashboards" / "exec-watchdog.json"
PROVISIONING_DIR = HERE / "provisioning"
