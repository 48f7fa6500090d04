"""Serving, shared by the exporter and the remediator: the same --listen rules, the same agent
secret rules, a busy port refused at start, and SIGTERM ending the process with 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from exec_watchdog.common.flags import ConfigError
from exec_watchdog.common.serving import parse_listen, read_agent_secret
from exec_watchdog.testbed.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("value", "expected"), [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    ("[::1]:9464", ("::1", 9464)),
    ("localhost:1", ("localhost", 1)),
    (" 0.0.0.0:65535 ", ("0.0.0.0", 65535)),
])
def test_listen_addresses_that_work(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("9464", "must be HOST:PORT, e.g. 127.0.0.1:9464"),
    (":9464", "must be HOST:PORT"),
    ("example.org:80", "'example.org' is not an IP address"),
    ("127.0.0.1:0", "port must be a number from 1 to 65535"),
    ("127.0.0.1:http", "port must be a number from 1 to 65535"),
])
def test_listen_addresses_that_do_not(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_listen(value, "127.0.0.1:9464")


def test_the_agent_secret_comes_from_exactly_one_place(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("from-file\n")
    assert read_agent_secret(None, str(path)) == "from-file"
    assert read_agent_secret("  from-flag \n", None) == "from-flag"
    with pytest.raises(ConfigError, match="both --agent-secret and --agent-secret-file"):
        read_agent_secret("from-flag", str(path))
    with pytest.raises(ConfigError, match="no agent secret"):
        read_agent_secret("  ", None)


def _start(command: str, port: int, database_file: Path, *extra: str,
           env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "exec_watchdog", command, f"--listen=127.0.0.1:{port}",
         f"--database-url=sqlite:///{database_file}", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


COMMANDS = [("exporter", ()), ("remediator", ("--insecure-no-auth",))]


@pytest.mark.parametrize(("command", "extra"), COMMANDS)
def test_a_secret_given_twice_is_refused_before_anything_starts(
        command: str, extra: tuple[str, ...], database_file: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s")
    proc = _start(command, free_port(), database_file, *extra, "--agent-secret=s",
                  env={"EXEC_WATCHDOG_AGENT_SECRET_FILE": str(secret)})
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "both --agent-secret and --agent-secret-file are set" in stderr


@pytest.mark.parametrize(("command", "extra"), COMMANDS)
def test_a_host_name_to_listen_on_is_refused(command: str, extra: tuple[str, ...], database_file: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "exec_watchdog", command, "--listen=example.org:9464", *extra,
         f"--database-url=sqlite:///{database_file}", "--agent-secret=s"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "'example.org' is not an IP address" in proc.stderr


@pytest.mark.parametrize(("command", "extra"), COMMANDS)
def test_a_busy_port_is_a_start_up_error_and_sigterm_a_clean_stop(
        command: str, extra: tuple[str, ...], database_file: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = _start(command, taken.getsockname()[1], database_file, *extra, "--agent-secret=s")
        _, stderr = busy.communicate(timeout=60)
    assert busy.returncode == 2
    assert "cannot listen there" in stderr

    port = free_port()
    proc = _start(command, port, database_file, *extra, "--agent-secret=s")
    try:
        wait_for_port(port, timeout=60, proc=proc)  # type: ignore[arg-type]
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_service_collects_garbage_in_larger_young_generations_and_never_rescans_its_start() -> None:
    """In a process of its own: the collector's settings belong to the whole process."""
    probe = ("import gc; from exec_watchdog.common.serving import FIRST_GENERATION_THRESHOLD, tune_collector; "
             "default = gc.get_threshold(); tune_collector(); "
             "print(default[0], gc.get_threshold()[0] == FIRST_GENERATION_THRESHOLD, "
             "gc.get_threshold()[1:] == default[1:], gc.get_freeze_count() > 1000)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split() == ["700", "True", "True", "True"]
