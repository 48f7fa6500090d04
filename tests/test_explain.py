"""`exec-watchdog explain`: the story of an execution read from the database, as a timeline or JSON.
(Reading it from a running remediator is tested on the live pipeline, in test_recoveries_page.py.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from exec_watchdog.cli import build_parser
from exec_watchdog.simulated_platform.agent_server import AgentServer, serve_agents
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.remediator_harness import SECRET, TOKEN, Harness, remediator


def explain(*argv: str) -> int:
    """The `exec-watchdog explain` subcommand as the CLI parses and runs it (logging left as the test set it)."""
    args = build_parser().parse_args(["explain", *argv])
    code: int = args.run(args)
    return code


@pytest.fixture
async def agents() -> AsyncIterator[AgentServer]:
    server = await serve_agents(["a1"], SECRET)
    yield server
    await server.stop()


@pytest.fixture
async def recovered(sqlite_url: str, redis_url: str, redis_client: redis.Redis,
                    agents: AgentServer) -> AsyncIterator[Harness]:
    """e1 recovered as an orphan, then delivered once more (and skipped)."""
    async with remediator(sqlite_url, redis_url, agents) as h:
        h.add_execution("e1", "a1")
        sent = alert("e1", "a1")
        for _ in range(2):
            await h.post(notification(sent))
        yield h


async def test_explain_prints_the_timeline_with_the_facts_of_each_decision(
        recovered: Harness, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = explain("e1", "--database-url", sqlite_url)

    out = capsys.readouterr().out
    assert code == 0, out
    row = recovered.row("e1")
    assert out.startswith("execution e1\n  now: failed on agent a1")
    assert f"  error: {row.error}" in out
    kinds = [line.split()[2] for line in out.split("timeline:\n")[1].splitlines() if not line.strip().startswith("-")]
    assert kinds == ["started", "alert_fired", "notification", "recovered", "slot_released", "announced",
                     "decision", "notification", "decision"]
    facts = [line.strip()[2:] for line in out.splitlines() if line.strip().startswith("- ")]
    assert any(f.startswith("agent: GET /api/executions/running answered in ") and
               "in none of running, pending, recently completed" in f for f in facts), facts
    assert any(f.startswith("guarded update") and repr(row.error) in f for f in facts), facts
    assert any(f.startswith("row as read") and "status failed" in f for f in facts), facts  # the second look


async def test_explain_json_is_what_the_story_api_answers(
        recovered: Harness, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = explain("e1", "--database-url", sqlite_url, "--format", "json")

    api = await recovered.client.get("/api/v1/executions/e1", headers={"Authorization": f"Bearer {TOKEN}"})
    assert code == 0
    assert json.loads(capsys.readouterr().out) == api.json()


async def test_explain_unknown_execution_exits_1_and_says_so(
        recovered: Harness, sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert explain("nobody-knows", "--database-url", sqlite_url) == 1
    assert "nothing is known about execution 'nobody-knows'" in capsys.readouterr().err


def test_explain_without_a_source_or_with_an_unsafe_id_exits_2(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EXEC_WATCHDOG_DATABASE_URL", "EXEC_WATCHDOG_REMEDIATOR_URL"):
        monkeypatch.delenv(name, raising=False)
    assert explain("e1") == 2
    assert "--remediator-url" in capsys.readouterr().err
    assert explain("../etc", "--database-url", "sqlite:///unused.db") == 2
    assert "not safe" in capsys.readouterr().err


def test_explain_from_a_missing_sqlite_file_says_so_exits_2_and_creates_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.db"
    assert explain("e1", "--database-url", f"sqlite:///{missing}") == 2
    assert "does not exist" in capsys.readouterr().err
    assert not missing.exists()


def test_explain_against_an_unreachable_remediator_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    from exec_watchdog.testbed.servers import free_port

    assert explain("e1", "--remediator-url", f"http://127.0.0.1:{free_port()}") == 2
    assert "cannot reach the remediator" in capsys.readouterr().err


def test_story_links_point_at_the_external_url_defaulting_like_alertmanager(tmp_path: Path) -> None:
    """Announcements and metrics link to <external-url>/#execution=<id>; without --external-url the
    listen address is used, with the host name in place of a wildcard host."""
    import socket

    from exec_watchdog.remediator.cli import build_config, default_external_url

    assert default_external_url("127.0.0.1:9464") == "http://127.0.0.1:9464"
    assert default_external_url("0.0.0.0:9464") == f"http://{socket.gethostname()}:9464"
    assert default_external_url("[::1]:9464") == "http://[::1]:9464"
    (tmp_path / "secret").write_text(SECRET)
    base = ["remediator", "--insecure-no-auth", f"--agent-secret-file={tmp_path / 'secret'}",
            f"--database-url=sqlite:///{tmp_path / 'db.sqlite'}"]
    config = build_config(build_parser().parse_args([*base, "--external-url", "https://watchdog.example/"]))
    assert config.external_url == "https://watchdog.example"
    with pytest.raises(ValueError, match="--external-url"):
        build_config(build_parser().parse_args([*base, "--external-url", "watchdog.example"]))
