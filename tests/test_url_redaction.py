"""A typo in a database or Redis URL is reported with the flag to fix, never with the password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exec_watchdog.platform_access.urls import redacted_url

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-pw"


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exec_watchdog", *argv], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


@pytest.mark.parametrize("argv", [
    ["remediator", f"--database-url=postgresql://watch:{SECRET}@db:notaport/trinity"],
    ["remediator", "--database-url=sqlite:///x.db", f"--redis-url=redis://:{SECRET}@cache:port/0"],
    ["remediator", "--database-url=sqlite:///x.db", f"--announce-redis-url=redis//:{SECRET}@cache"],
    ["exporter", f"--database-url=postgresql://watch:{SECRET}@db:notaport/trinity"],
    ["exporter", "--database-url=postgresql://watch@db/trinity", f"--redis-url=redis//:{SECRET}@cache"],
])
def test_cli_url_typos_hide_the_password(argv: list[str], tmp_path: Path) -> None:
    result = _run(*argv, "--agent-secret=x", "--insecure-no-auth") if argv[0] == "remediator" \
        else _run(*argv, "--agent-secret=x")
    assert result.returncode != 0
    assert SECRET not in result.stdout + result.stderr
    assert "url" in result.stderr.lower(), result.stderr


def test_redacted_url_keeps_everything_but_the_password() -> None:
    assert redacted_url(f"redis://user:{SECRET}@h:6379/0") == "redis://user:***@h:6379/0"
    assert redacted_url("redis://h:6379/0") == "redis://h:6379/0"
