"""One-off rewrite (issue 14): the top-level packages become exec_watchdog.<name>.

Rewrites import statements, `python -m <pkg>.<mod>` invocations and dotted module references in
docstrings/strings. Idempotent: a name already prefixed with ``exec_watchdog.`` is left alone.
Usage: python scripts/namespace_imports.py [paths...]   (default: the tracked files)
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PACKAGES = ["platform_access", "simulated_platform", "exporter", "alerts", "remediator", "grafana", "pipeline",
            "testbed"]
P = "|".join(PACKAGES)
NS = "exec_watchdog."
RULES = [
    # from exporter.app import x / from exporter import x (also inside strings: python -c code)
    (re.compile(rf"(?<![\w.])from ({P})(?=(\.[\w.]+)? import )"), rf"from {NS}\1"),
    # import remediator.remediate as remediate
    (re.compile(rf"(?<![\w.])import ({P})(?=\.)"), rf"import {NS}\1"),
    # python -m alerts.render, "-m", "alerts.render"
    (re.compile(rf"(-m\s+|\"-m\",\s*\")({P})(?=\.\w)"), rf"\1{NS}\2"),
    # dotted module references in docs and strings: `exporter.app`, :mod:`x.y`, ~x.y, "x.y", (x.y)
    (re.compile(rf"(?<=[`~\"'(])({P})(?=\.[a-z_]+\b(?!\.(py|yml|yaml|json|md|html)\b))"), rf"{NS}\1"),
]
# Code where a local variable happens to share a package's name: never rewritten.
SKIP_LINE = re.compile(
    r"pipeline\.stack\.|pipeline\.alerts\(|remediator\.(kill\(|finish_unfinished\(|breaker\.is_open)"
    r"|grafana\.ini|remediator\.log|^(For teams|buckets \()"
)
SUFFIXES = {".py", ".md", ".toml", ".yml", ".yaml", ""}


def rewrite(text: str) -> str:
    out = []
    for line in text.splitlines(keepends=True):
        if not SKIP_LINE.search(line):
            for pattern, repl in RULES:
                line = pattern.sub(repl, line)
        out.append(line)
    return "".join(out)


def main(argv: list[str]) -> int:
    paths = [Path(p) for p in argv] or [Path(p) for p in subprocess.run(
        ["git", "ls-files"], capture_output=True, text=True, check=True).stdout.split()]
    for path in paths:
        if path.suffix not in SUFFIXES and path.name not in {"Makefile", "Containerfile"}:
            continue
        if path.name in {"namespace_imports.py", "test_packaging.py"} or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        new = rewrite(text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
