"""Nothing is lost, operators stay in control: a crash between transition and release, and a
silence made after the notification left — with a real remediator process and a real Alertmanager."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis

from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.slots import RedisSlots, slot_metadata
from exec_watchdog.platform_access.timestamps import utcnow
from exec_watchdog.simulated_platform.agent_server import AgentServer, serve_agents
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.platform_rows import insert_execution
from exec_watchdog.testbed.remediator_harness import SECRET, TOKEN, received, remediator, subscriber
from exec_watchdog.testbed.servers import alertmanager_server, free_port, wait_for_port


@pytest.fixture
async def agents() -> AsyncIterator[AgentServer]:
    server = await serve_agents(["a1"], SECRET)
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def alertmanager() -> Iterator[str]:
    with alertmanager_server() as url:
        yield url


# The fault, injected from here: the real remediator, whose process dies (exit 70) the moment the
# recovery transition has committed, before the slot is released and the recovery announced.
CRASH_AFTER_TRANSITION = """
import os, sys
from exec_watchdog.cli import main
from exec_watchdog.remediator.remediate import Remediator

transition = Remediator._transition

def crash_after_transition(self, verdicts):
    transition(self, verdicts)
    os._exit(70)

Remediator._transition = crash_after_transition
sys.exit(main(sys.argv[1:]))
"""


def _start_remediator(tmp: Path, database_url: str, redis_url: str, template: str, *, crash: bool) -> tuple[
        subprocess.Popen[bytes], str]:
    (tmp / "token").write_text(TOKEN)
    (tmp / "secret").write_text(SECRET)
    port = free_port()
    start = [sys.executable, "-c", CRASH_AFTER_TRANSITION] if crash else [sys.executable, "-m", "exec_watchdog"]
    proc = subprocess.Popen(
        [*start, "remediator", f"--listen=127.0.0.1:{port}",
         f"--database-url={database_url}", f"--redis-url={redis_url}", f"--announce-redis-url={redis_url}",
         f"--agent-url-template={template}", f"--agent-secret-file={tmp / 'secret'}",
         f"--bearer-token-file={tmp / 'token'}", "--claim-ttl=0.5", "--sweep-interval=0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc=proc)
    return proc, f"http://127.0.0.1:{port}"


async def test_crash_between_transition_and_release_is_finished_after_restart(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    database_url = f"sqlite:///{tmp_path / 'trinity.db'}"
    engine = db.create_engine(database_url)
    db.create_platform_tables(engine, slot_metadata)
    with engine.begin() as c:
        insert_execution(c, "e1", "a1", age_seconds=120)
    RedisSlots(redis_client).acquire("a1", "e1", utcnow(), "m", 3600)
    events = subscriber(redis_url)

    proc, url = _start_remediator(tmp_path, database_url, redis_url, agents.url_template, crash=True)
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.HTTPError):  # the process dies mid-request
            await client.post(f"{url}/api/v1/alerts", json=notification(alert("e1", "a1")),
                              headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert proc.wait(10) == 70
    with engine.connect() as c:
        execution = db.get_executions(c, ["e1"])["e1"]
    assert isinstance(execution, db.Execution) and execution.status == "failed"
    assert RedisSlots(redis_client).held("a1") == {"e1"}  # the crash left the slot taken
    assert received(events) == []

    proc, url = _start_remediator(tmp_path, database_url, redis_url, agents.url_template, crash=False)
    try:
        deadline = time.monotonic() + 10
        while RedisSlots(redis_client).held("a1") and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert RedisSlots(redis_client).held("a1") == set()
        announced = received(events, wait=1.0)
        assert [e["execution_id"] for e in announced] == ["e1"]
        # A late duplicate notification changes nothing more.
        async with httpx.AsyncClient() as client:
            r = await client.post(f"{url}/api/v1/alerts", json=notification(alert("e1", "a1")),
                                  headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json()["alerts"][0]["outcome"] == "skipped"
        assert received(events) == []
    finally:
        proc.terminate()
        proc.wait(10)
        engine.dispose()


async def test_silence_made_after_the_notification_stops_the_action(
        sqlite_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer, alertmanager: str) -> None:
    async with remediator(sqlite_url, redis_url, agents, alertmanager_urls=(alertmanager,)) as h:
        h.add_execution("e1", "a1")
        now = datetime.now(UTC)
        silence = {"matchers": [{"name": "remediation", "value": ".+", "isRegex": True, "isEqual": True}],
                   "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=5)).isoformat(),
                   "createdBy": "test", "comment": "maintenance: pause all remediation"}
        async with httpx.AsyncClient() as client:
            created = await client.post(f"{alertmanager}/api/v2/silences", json=silence)
            created.raise_for_status()
            silence_id = created.json()["silenceID"]
            response = await h.post(notification(alert("e1", "a1")))
            assert response.status_code == 200
            assert response.json()["alerts"][0]["outcome"] == "silenced"
            assert silence_id in response.json()["alerts"][0]["reason"]
            assert h.row("e1").status == "running"
            (await client.delete(f"{alertmanager}/api/v2/silence/{silence_id}")).raise_for_status()
        response = await h.post(notification(alert("e1", "a1")))
        assert response.json()["alerts"][0]["outcome"] == "recovered"


async def test_alertmanager_unreachable_for_the_silence_check_means_retry(
        sqlite_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    async with remediator(sqlite_url, redis_url, agents, alertmanager_urls=(f"http://127.0.0.1:{free_port()}",)) as h:
        h.add_execution("e1", "a1")
        response = await h.post(notification(alert("e1", "a1")))
        assert response.status_code == 503
        assert "cannot check silences" in response.json()["alerts"][0]["reason"]
        assert h.row("e1").status == "running"
