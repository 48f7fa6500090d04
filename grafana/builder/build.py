"""Write the dashboard JSON that Grafana provisions, or check that the committed copy is current.

    python -m exec_watchdog.grafana.builder.build           # regenerate grafana/dashboards/exec-watchdog.json
    python -m exec_watchdog.grafana.builder.build --check   # exit 1 if the committed JSON differs from the generator
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from exec_watchdog.common.generated import sync_generated
from exec_watchdog.grafana import DASHBOARD_PATH
from exec_watchdog.grafana.builder import dashboard

REGENERATE = "exec_watchdog.grafana.builder.build"


def render() -> str:
    """The dashboard as JSON text: sorted keys and two-space indent, so diffs stay readable."""
    return json.dumps(dashboard.build(), cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {REGENERATE}", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON is out of date")
    parser.add_argument("--output", type=Path, default=DASHBOARD_PATH, help="where to write the JSON")
    args = parser.parse_args(argv)
    return sync_generated({args.output: render()}, check=args.check, regenerate=f"python -m {REGENERATE}")


if __name__ == "__main__":
    sys.exit(main())
