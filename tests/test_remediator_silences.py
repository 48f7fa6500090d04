"""Silences are matched exactly as Alertmanager matches them (Go RE2, anchored): a real
Alertmanager says which alerts a silence covers, and the remediator must agree with it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis

from exec_watchdog.remediator.silences import covering, parse_silences
from exec_watchdog.simulated_platform.agent_server import AgentServer, serve_agents
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.remediator_harness import SECRET, remediator
from exec_watchdog.testbed.servers import alertmanager_server

LONG_AGENT = "a" * 40  # the backtracking regex below took Python's re minutes on 40 characters


@pytest.fixture
async def agents() -> AsyncIterator[AgentServer]:
    server = await serve_agents(["a1", "alpha", LONG_AGENT], SECRET)
    yield server
    await server.stop()


@pytest.fixture
def alertmanager() -> Iterator[str]:
    with alertmanager_server() as url:
        yield url


def _silence(matchers: list[dict[str, Any]]) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"matchers": matchers, "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=5)).isoformat(),
            "createdBy": "tests", "comment": "test"}


def _regex(name: str, value: str, *, equal: bool = True) -> dict[str, Any]:
    return {"name": name, "value": value, "isRegex": True, "isEqual": equal}


# (matcher, label value): RE2-only syntax, anchoring and Go's flags, each checked both ways.
CASES = [
    (_regex("agent", "[[:alpha:]]+"), "alpha"),
    (_regex("agent", "[[:alpha:]]+"), "alpha1"),
    (_regex("agent", r"\Qa.b\E"), "a.b"),
    (_regex("agent", r"\Qa.b\E"), "axb"),
    (_regex("agent", r"\p{L}+"), "alpha"),
    (_regex("agent", r"(?U)al.*"), "alpha"),
    (_regex("agent", r"alpha\z"), "alpha"),
    (_regex("agent", "alp"), "alpha"),  # anchored: a prefix is no match
    (_regex("agent", "alpha|beta"), "beta"),
    (_regex("agent", "x+", equal=False), "alpha"),
    (_regex("missing_label", ""), "alpha"),  # a missing label matches as ""
]


def test_matching_agrees_with_a_real_alertmanager(alertmanager: str) -> None:
    """For each matcher, Alertmanager's own verdict on an alert equals ours."""
    with httpx.Client(base_url=alertmanager, timeout=10) as am:
        for index, (matcher, value) in enumerate(CASES):
            labels = {"alertname": f"Case{index}", "agent": value}
            silence_id = am.post("/api/v2/silences", json=_silence(
                [{"name": "alertname", "value": f"Case{index}", "isRegex": False, "isEqual": True}, matcher])
            ).raise_for_status().json()["silenceID"]
            am.post("/api/v2/alerts", json=[{"labels": labels}]).raise_for_status()
            deadline = time.monotonic() + 10
            while True:
                found = am.get("/api/v2/alerts", params={"filter": f'alertname="Case{index}"'}).json()
                if found or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert found, f"Alertmanager did not take alert {labels}"
            theirs = silence_id in found[0]["status"]["silencedBy"]
            ours = covering(parse_silences(am.get("/api/v2/silences").json()), labels)
            assert (ours is not None and ours[0] == "silenced") == theirs, (matcher, value, theirs, ours)


async def test_alertmanager_silence_with_posix_class_stops_the_action(
        sqlite_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer, alertmanager: str) -> None:
    """agent=~"[[:alpha:]]+" silences agent "alpha" in Alertmanager, so it must here too."""
    async with remediator(sqlite_url, redis_url, agents, alertmanager_urls=(alertmanager,)) as h:
        h.add_execution("e1", "alpha")
        async with httpx.AsyncClient() as client:
            (await client.post(f"{alertmanager}/api/v2/silences",
                               json=_silence([_regex("agent", "[[:alpha:]]+")]))).raise_for_status()
        response = await h.post(notification(alert("e1", "alpha")))
        assert response.status_code == 200
        assert response.json()["alerts"][0]["outcome"] == "silenced"
        assert h.row("e1").status == "running"


async def test_re2_only_silences_elsewhere_do_not_stop_remediation(
        sqlite_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer, alertmanager: str) -> None:
    """Silences using RE2-only syntax on other agents leave an unrelated orphan recoverable."""
    async with remediator(sqlite_url, redis_url, agents, alertmanager_urls=(alertmanager,)) as h:
        h.add_execution("e1", "a1")
        async with httpx.AsyncClient() as client:
            for value in (r"\Qweird.agent\E", r"\p{Lu}+", r"(?U)zz.*", r"zz\z"):
                (await client.post(f"{alertmanager}/api/v2/silences",
                                   json=_silence([_regex("agent", value)]))).raise_for_status()
        response = await h.post(notification(alert("e1", "a1")))
        assert response.status_code == 200, response.text
        assert response.json()["alerts"][0]["outcome"] == "recovered"
        assert h.row("e1").status == "failed"


@pytest.mark.timeout(60)
async def test_backtracking_silence_regex_is_linear(
        sqlite_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer, alertmanager: str) -> None:
    """(\\w+-?)+-canary against a 40-character label answers at once (RE2 is linear time)."""
    async with remediator(sqlite_url, redis_url, agents, alertmanager_urls=(alertmanager,)) as h:
        h.add_execution("e1", LONG_AGENT)
        async with httpx.AsyncClient() as client:
            (await client.post(f"{alertmanager}/api/v2/silences",
                               json=_silence([_regex("agent", r"(\w+-?)+-canary")]))).raise_for_status()
        started = time.monotonic()
        response = await h.post(notification(alert("e1", LONG_AGENT)))
        assert response.json()["alerts"][0]["outcome"] == "recovered"
        assert time.monotonic() - started < 10


def test_an_unreadable_silence_affects_only_alerts_it_might_cover() -> None:
    """A silence we cannot parse makes only the alerts its readable matchers cover wait."""
    now = "2026-01-01T00:00:00Z"
    body = [
        {"id": "bad", "status": {"state": "active"}, "startsAt": now, "endsAt": now,
         "matchers": [{"name": "agent", "value": "a1", "isRegex": False, "isEqual": True},
                      _regex("execution_id", "(unclosed")]},
        {"id": "good", "status": {"state": "active"}, "matchers": [_regex("agent", "a2")]},
    ]
    active = parse_silences(body)
    unsure = covering(active, {"agent": "a1", "execution_id": "e1"})
    assert unsure is not None and unsure[0] == "retry" and "silence bad" in unsure[1]
    assert covering(active, {"agent": "a2"}) == ("silenced", "silenced now by good")
    assert covering(active, {"agent": "a3"}) is None
