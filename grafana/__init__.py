"""Grafana dashboards and provisioning for exec-watchdog.

The dashboard is code (``grafana/dashboard.py``, built with grafana-foundation-sdk); the JSON that
Grafana loads is its committed output, regenerated with ``python -m grafana.build``.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
DASHBOARD_PATH = HERE / "dashboards" / "exec-watchdog.json"
PROVISIONING_DIR = HERE / "provisioning"
