"""`exec-watchdog exporter`: flags and environment, start-up errors, and the served endpoints."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exec_watchdog.common.contract import ExporterMetric as m
from exec_watchdog.common.flags import ConfigError
from exec_watchdog.common.serving import parse_listen
from exec_watchdog.exporter import cli
from exec_watchdog.exporter.settings import ExporterSettings, settings_from_args
from exec_watchdog.platform_access import database as db
from exec_watchdog.simulated_platform.agent_server import AgentServerThread
from exec_watchdog.testbed.platform_rows import insert_agent, insert_execution
from exec_watchdog.testbed.servers import free_port, wait_for_port

SECRET = "cli-test-secret"
ROOT = Path(__file__).resolve().parents[1]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="exec-watchdog")
    cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["exporter", *argv])


def settings(*argv: str) -> ExporterSettings:
    return settings_from_args(parse(*argv))


def test_flags_become_settings(database_file: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    got = settings("--listen", "127.0.0.1:9999", "--database-url", f"sqlite:///{database_file}",
                   "--agent-url-template", "http://127.0.0.1:8000/agents/{agent}", "--agent-secret-file", str(secret),
                   "--redis-url", "redis://127.0.0.1:6379/0", "--agent-timeout", "1.5", "--poll-concurrency", "20",
                   "--scrape-timeout", "4", "--database-timeout", "2")
    assert got == ExporterSettings(
        host="127.0.0.1", port=9999, database_url=f"sqlite:///{database_file}",
        agent_url_template="http://127.0.0.1:8000/agents/{agent}", agent_secret="s3cret",
        redis_url="redis://127.0.0.1:6379/0", agent_timeout=1.5, poll_concurrency=20, database_timeout=2.0,
        scrape_timeout=4.0)
    assert "s3cret" not in repr(got)


def test_environment_fills_flags_that_are_not_given(database_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXEC_WATCHDOG_DATABASE_URL", f"sqlite:///{database_file}")
    monkeypatch.setenv("EXEC_WATCHDOG_AGENT_SECRET", "from-env")
    monkeypatch.setenv("EXEC_WATCHDOG_POLL_CONCURRENCY", "7")
    got = settings("--poll-concurrency", "9")
    assert (got.agent_secret, got.poll_concurrency, got.host, got.port) == ("from-env", 9, "127.0.0.1", 9463)


@pytest.mark.parametrize(("argv", "message"), [
    (["--database-url", "not a url"], "--database-url 'not a url' is not a database URL"),
    (["--database-url", "mysql://h/db"], "unsupported database 'mysql'"),
    (["--database-url", "sqlite:////nonexistent/trinity.db"], "does not exist"),
    (["--agent-url-template", "http://agent:8000"], "must contain '{agent}' exactly once"),
    (["--agent-url-template", "ftp://{agent}/x"], "must be an http:// or https:// URL"),
    (["--listen", "9463"], "must be HOST:PORT"),
    (["--listen", "example.org:80"], "is not an IP address"),
    (["--listen", "127.0.0.1:99999"], "port must be a number from 1 to 65535"),
    (["--agent-timeout", "soon"], "--agent-timeout 'soon' is not a number of seconds"),
    (["--agent-timeout", "-1"], "must be a positive number of seconds"),
    (["--agent-timeout", "9", "--scrape-timeout", "8"], "must not exceed --scrape-timeout"),
    (["--poll-concurrency", "0"], "--poll-concurrency must be from 1 to 1000"),
    (["--redis-url", "localhost:6379"], "--redis-url 'localhost:6379' must start with redis://"),
])
def test_bad_settings_name_the_flag_to_fix(argv: list[str], message: str, database_file: Path) -> None:
    base = ["--database-url", f"sqlite:///{database_file}", "--agent-secret", "s"]
    with pytest.raises(ConfigError) as info:
        settings(*base, *argv)
    assert message in str(info.value)


def test_missing_secret_says_how_to_give_it(database_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no agent secret: pass --agent-secret-file"):
        settings("--database-url", f"sqlite:///{database_file}")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        settings("--database-url", f"sqlite:///{database_file}", "--agent-secret-file", str(empty))
    with pytest.raises(ConfigError, match="cannot be read"):
        settings("--database-url", f"sqlite:///{database_file}", "--agent-secret-file", str(tmp_path / "nope"))


def test_ipv6_listen_address_is_accepted() -> None:
    assert parse_listen("[::1]:9463") == ("::1", 9463)


# -- the real command, as a separate process -----------------------------------------------------

def command() -> list[str]:
    return [sys.executable, "-m", "exec_watchdog", "exporter"]


def run_command(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command(), *argv], capture_output=True, text=True, timeout=30, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def test_unknown_flag_fails_at_start() -> None:
    result = run_command("--agent-secrets", "x")
    assert result.returncode == 2
    assert "unrecognized arguments: --agent-secrets" in result.stderr


def test_bad_configuration_fails_at_start_with_what_to_fix(database_file: Path) -> None:
    result = run_command("--database-url", f"sqlite:///{database_file}")
    assert result.returncode == 2
    assert "exec-watchdog exporter: no agent secret" in result.stderr
    result = run_command("--database-url", "sqlite://", "--agent-secret", "s")
    assert result.returncode == 2
    assert "names no file" in result.stderr


def test_busy_port_fails_at_start(database_file: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_command("--listen", f"127.0.0.1:{port}", "--database-url", f"sqlite:///{database_file}",
                             "--agent-secret", "s")
    assert result.returncode == 2
    assert f"--listen 127.0.0.1:{port}: cannot listen there" in result.stderr


@pytest.fixture
def agents() -> Iterator[AgentServerThread]:
    with AgentServerThread(["a1", "a2"], SECRET) as thread:
        yield thread


def test_served_metrics_and_health_end_to_end(database_file: Path, agents: AgentServerThread,
                                              tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite:///{database_file}")
    with engine.begin() as c:
        insert_agent(c, "a1", timeout_seconds=600)
        insert_execution(c, "e-known", "a1", age_seconds=30)
        insert_execution(c, "e-lost", "a1", age_seconds=90)
        insert_execution(c, "e-other", "a2")
    engine.dispose()
    agents.call(lambda: agents.server.registry("a1").start("e-known", 60))
    agents.call(lambda: _fault(agents, "a2", "down"))
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    port = free_port()
    proc = subprocess.Popen(
        [*command(), "--listen", f"127.0.0.1:{port}", "--agent-secret-file", str(secret_file),
         "--agent-timeout", "2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "EXEC_WATCHDOG_DATABASE_URL": f"sqlite:///{database_file}",
             "EXEC_WATCHDOG_AGENT_URL_TEMPLATE": agents.url_template})
    try:
        wait_for_port(port, proc=proc)  # type: ignore[arg-type]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            assert http.get("/healthz").status_code == 200
            response = http.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
            # What Prometheus 2.42 asks for; the text format is in its list and is what we serve.
            prometheus_accept = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                                 "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
            again = http.get("/metrics", headers={"Accept": prometheus_accept})
            assert again.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(response.text) for s in f.samples}

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    known = {"agent": "a1", "execution_id": "e-known", "schedule_id": "__manual__"}
    assert value(m.EXECUTION_AGENT_KNOWN, **known) == 1
    assert value(m.EXECUTION_AGENT_KNOWN, agent="a1", execution_id="e-lost", schedule_id="__manual__") == 0
    assert value(m.EXECUTION_AGENT_KNOWN, agent="a2", execution_id="e-other", schedule_id="__manual__") is None
    assert value(m.EXECUTION_TIMEOUT, **known) == 600
    assert 30 <= (value(m.EXECUTION_RUNTIME, **known) or 0) < 40
    assert value(m.AGENT_UP, agent="a2") == 0
    assert value(m.DATABASE_UP) == 1
    assert value("process_resident_memory_bytes") is not None
    # JSON logs: every line of stderr is one object; the down agent was reported once.
    records = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert any(r.get("event") == "agent poll" and r.get("agent") == "a2" for r in records)
    assert all("level" in r and "timestamp" in r for r in records)
    assert SECRET not in stderr


async def _fault(agents: AgentServerThread, name: str, mode: str) -> None:
    agents.server.agents[name].set_fault(mode)  # type: ignore[arg-type]


def test_database_url_with_a_bad_port_is_a_config_error(database_file: Path) -> None:
    with pytest.raises(ConfigError, match="is not a database URL"):
        settings("--database-url", "postgresql+psycopg://u@h:notaport/db", "--agent-secret", "s")
