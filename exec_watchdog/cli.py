"""The `exec-watchdog` command: one entry point, a subcommand per part of the pipeline."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from exec_watchdog.common.logs import configure_logging
from exec_watchdog.common.version import __version__

DESCRIPTION = """\
Find executions an agent platform has lost track of and recover them safely.

The pipeline, in the order data flows:
  simulate    run a simulated Trinity platform (agents running real processes, a scheduler, faults)
  exporter    publish per-execution runtime and agent presence to Prometheus (/metrics)
  remediator  the Alertmanager webhook: re-verify, terminate, mark failed, release slot, announce
  explain     one execution's story: every notification, decision with its evidence, and action
  shadow      beside the platform's own cleanup: `shadow report` lists where the two disagree
  demo        all of it, with real Prometheus and Alertmanager as child processes
  db          create the embedded database (never alters an existing one)
  advise      advise a timeout per schedule from its completed runs (reads only)

Every flag can also be set by an environment variable named EXEC_WATCHDOG_<FLAG>
(for example EXEC_WATCHDOG_DATABASE_URL); a flag on the command line wins.
"""


def build_parser() -> argparse.ArgumentParser:
    # Imported here so `--help` on one part never pays for another part's imports at module load.
    from exec_watchdog import advise as advise_cli
    from exec_watchdog.exporter import cli as exporter_cli
    from exec_watchdog.pipeline import cli as pipeline_cli
    from exec_watchdog.platform_access import cli as platform_cli
    from exec_watchdog.remediator import cli as remediator_cli
    from exec_watchdog.remediator import explain as explain_cli
    from exec_watchdog.remediator import shadow_report as shadow_cli
    from exec_watchdog.simulated_platform import cli as simulate_cli

    parser = argparse.ArgumentParser(
        prog="exec-watchdog", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"exec-watchdog {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default="json", choices=["json", "console"],
                        help="json: one object per line (default); console: for people")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (simulate_cli, exporter_cli, remediator_cli, explain_cli, shadow_cli, pipeline_cli, platform_cli,
                   advise_cli):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from exec_watchdog.common.flags import ConfigError

    try:
        parser = build_parser()
    except ConfigError as exc:  # an environment variable no flag can take
        print(f"exec-watchdog: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
