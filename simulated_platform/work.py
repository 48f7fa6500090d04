"""A simulated agent execution: sleeps for a while, then exits with a chosen code.

Run as ``python -m exec_watchdog.simulated_platform.work --seconds 30 [--ignore-sigint] [--exit-code 3]``. It
sleeps rather than spins so thousands of them cost no CPU. Like a real agent runtime, SIGINT ends
it (returncode -2) unless ``--ignore-sigint`` is given, which is how tests get a process that only
SIGKILL can stop.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from collections.abc import Sequence


def _seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"--seconds must be a finite number >= 0, got {text!r}")
    return value


def _exit_code(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"--exit-code must be between 0 and 255, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="exec_watchdog.simulated_platform.work", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=_seconds, required=True, help="how long the work takes")
    parser.add_argument("--ignore-sigint", action="store_true", help="survive SIGINT (only SIGKILL stops it)")
    parser.add_argument("--exit-code", type=_exit_code, default=0, help="exit status when the work is done")
    args = parser.parse_args(argv)
    if args.ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        # Die by the signal itself (returncode -2), as an interrupted agent runtime would.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    time.sleep(args.seconds)
    code: int = args.exit_code
    return code


if __name__ == "__main__":
    sys.exit(main())
