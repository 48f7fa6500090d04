"""`exec-watchdog demo` (being written)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=None)


def run(args: argparse.Namespace) -> int:
    print("exec-watchdog demo: not finished yet")
    return 1
