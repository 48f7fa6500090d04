"""`exec-watchdog demo`: the whole pipeline on the embedded default."""

from __future__ import annotations

from typing import Any


def register(commands: Any) -> None:
    from exec_watchdog.pipeline.demo import add_arguments, run

    p = commands.add_parser(
        "demo", help="the whole pipeline, live: simulated platform, exporter, remediator, real Prometheus "
                     "and Alertmanager",
        description="Start the simulated platform (with faults), the exporter, the remediator, and real "
                    "Prometheus and Alertmanager as child processes on free loopback ports, with configurations "
                    "generated from alerts/ (fast profile). Prints where everything is, then a live account of "
                    "executions, alerts and recoveries. Ctrl-C or --duration stops everything.")
    add_arguments(p)
    p.set_defaults(run=run)
