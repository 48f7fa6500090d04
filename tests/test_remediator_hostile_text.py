"""An agent's text is data: it never poisons a delivery, never carries a secret into what we store or
send, and a hostile ``/result`` is never claimed on its word alone.

Real peers: SQLite and PostgreSQL, Redis, simulated agents running real processes. The texts and
envelopes no real agent server would send come from the test's HTTP front (``tests/agent_front.py``)
answering that one route of that one agent; everything else is forwarded to the real agents.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any, cast

import pytest
import redis
import sqlalchemy as sa
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from exec_watchdog.common import logs
from exec_watchdog.common.serving import opened
from exec_watchdog.platform_access.agent_client import AgentClient
from exec_watchdog.platform_access.auth import agent_token
from exec_watchdog.platform_access.timestamps import format_utc, parse_utc
from exec_watchdog.remediator import audit
from exec_watchdog.remediator.app import State
from exec_watchdog.remediator.explain import render
from exec_watchdog.remediator.story import load
from exec_watchdog.simulated_platform.agent_server import AgentServer
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.remediator_harness import SECRET, TOKEN, Harness, received, remediator, subscriber
from tests.agent_front import AgentFront, agent_front

pytestmark = pytest.mark.timeout(120)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def front(agents: AgentServer) -> AsyncIterator[AgentFront]:
    async with agent_front(agents) as f:
        yield f


def _via(front: AgentFront) -> AgentServer:
    return cast(AgentServer, front)  # the harness only needs its url_template


def _outcomes(response: Any) -> dict[str, str]:
    return {a["execution_id"]: a["outcome"] for a in response.json()["alerts"]}


def _last_error(message: str, error_type: str = "Crash") -> tuple[int, bytes]:
    return 200, json.dumps({"error_type": error_type, "error_message": message}).encode()  # \\ud800 stays escaped


# -- delivery poisoning -------------------------------------------------------------------------------

@pytest.mark.parametrize(("sent", "stored"), [
    ("lone \ud800 surrogate", "lone \ufffd surrogate"),
    ("a NUL\x00byte", "a NULbyte"),
    ("bell\x07 escape\x1b[31m del\x7f c1\x85 cr\r\nlf\ttab", "bell escape[31m del c1 cr\nlf\ttab"),
])
async def test_hostile_last_error_text_is_normalised_and_its_neighbour_still_recovered(
        database_url: str, redis_url: str, redis_client: redis.Redis, front: AgentFront, sent: str,
        stored: str) -> None:
    """Before: a lone surrogate answered 500 (UnicodeEncodeError), a NUL 503 on PostgreSQL, on every
    delivery, and the healthy orphan beside it stayed running."""
    front.answers[("a2", "/last-error")] = _last_error(sent)
    async with remediator(database_url, redis_url, _via(front)) as h:
        h.add_execution("e-hostile", "a2", age_seconds=120)
        h.add_execution("e-ok", "a1", age_seconds=120)
        response = await h.post(notification(alert("e-hostile", "a2"), alert("e-ok", "a1")))
        assert response.status_code == 200, response.text
        assert _outcomes(response) == {"e-hostile": "recovered", "e-ok": "recovered"}
        assert h.row("e-hostile").error.startswith(f"[Crash] {stored}. Cleanup: Execution not tracked")
        assert h.row("e-ok").status == "failed"


async def test_a_huge_last_error_is_bounded_where_it_enters(sqlite_url: str, redis_url: str,
                                                            redis_client: redis.Redis, front: AgentFront) -> None:
    front.answers[("a2", "/last-error")] = _last_error("x" * 1_000_000, error_type="T" * 10_000)
    client = AgentClient(front.url_template, SECRET)
    try:
        answer = (await client.last_error("a2", "e1")).unwrap()
    finally:
        await client.aclose()
    assert answer.error_type is not None and answer.error_message is not None
    assert len(answer.error_type) == 200 and len(answer.error_message) == 2_000


async def test_any_exception_in_one_alerts_step_is_that_alerts_retry(
        sqlite_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault injected into one agent's /last-error call (no real peer raises on demand): before,
    the exception escaped the notification (500) and the healthy orphan stayed running."""
    real = AgentClient.last_error

    async def faulty(self: AgentClient, agent: str, execution_id: str) -> Any:
        if agent == "a2":
            raise LookupError("injected fault")
        return await real(self, agent, execution_id)

    monkeypatch.setattr(AgentClient, "last_error", faulty)
    async with remediator(sqlite_url, redis_url, agents) as h:
        h.add_execution("e-fault", "a2", age_seconds=120)
        h.add_execution("e-ok", "a1", age_seconds=120)
        response = await h.post(notification(alert("e-fault", "a2"), alert("e-ok", "a1")))
        assert response.status_code == 503, response.text
        assert _outcomes(response) == {"e-fault": "retry", "e-ok": "recovered"}
        reason = response.json()["alerts"][0]["reason"]
        assert "LookupError" in reason and "injected" not in reason  # the type only: its text may be an agent's
        assert (h.row("e-fault").status, h.row("e-ok").status) == ("running", "failed")
        monkeypatch.setattr(AgentClient, "last_error", real)
        assert _outcomes(await h.post(notification(alert("e-fault", "a2")))) == {"e-fault": "recovered"}


async def test_a_result_nested_absurdly_deep_is_a_retry_not_a_crash(
        sqlite_url: str, redis_url: str, redis_client: redis.Redis, front: AgentFront) -> None:
    front.answers[("a2", "/result")] = (200, b"[" * 100_000 + b"]" * 100_000)
    async with remediator(sqlite_url, redis_url, _via(front), claim_defer_seconds=0) as h:
        h.add_execution("e-deep", "a2", age_seconds=120)
        h.add_execution("e-ok", "a1", age_seconds=120)
        response = await h.post(notification(alert("e-deep", "a2"), alert("e-ok", "a1")))
        assert _outcomes(response) == {"e-deep": "retry", "e-ok": "recovered"}, response.text
        assert "not JSON" in response.json()["alerts"][0]["reason"]


async def test_a_recovery_for_an_alert_from_year_0999_is_finished_by_the_sweep(
        database_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    """The delivery's own finish fails once (Redis refusing the announcement: injected, a shared Redis
    cannot be stopped for one test), so the sweep must finish it from the outbox row. Before: that row's
    alert start was written "999-01-01..." (unreadable), so the sweep never finished it, pending_finishes
    stayed 1 and the same error was logged every sweep."""
    async with remediator(database_url, redis_url, agents, sweep_interval_seconds=0.2) as h:
        events = subscriber(redis_url)
        announcer = opened(h.app, State).remediator.announcer
        real, calls = announcer.announce, []

        async def refused_once(recoveries: list[audit.Recovery], now: datetime) -> None:
            calls.append(len(recoveries))
            if len(calls) == 1:
                raise redis.ConnectionError("injected: Redis refused the announcement")
            await real(recoveries, now)

        announcer.announce = refused_once  # type: ignore[method-assign]
        h.add_execution("e-old", "a1", age_seconds=120)
        sent = alert("e-old", "a1")
        sent["startsAt"] = "0999-01-01T00:00:00Z"
        response = await h.post(notification(sent))
        assert response.status_code == 503 and _outcomes(response) == {"e-old": "recovered"}, response.text
        deadline = time.monotonic() + 10
        while not received_ids(events):
            assert time.monotonic() < deadline, "the sweep announced the recovery"
            await asyncio.sleep(0.1)  # the sweeper runs on this event loop
        with h.engine.connect() as conn:
            assert audit.count_unfinished(conn) == 0
            started = conn.execute(sa.select(audit.recoveries.c.alert_started_at)).scalar_one()
        assert started.startswith("0999-01-01T")
        assert h.row("e-old").status == "failed" and h.slots.held("a1") == set()


def received_ids(events: Any) -> list[str]:
    return [e["execution_id"] for e in received(events, wait=0.05)]


async def test_missing_audit_tables_answer_a_clear_503_and_readiness_fails(
        database_url: str, redis_url: str, redis_client: redis.Redis, agents: AgentServer) -> None:
    """Before: PostgreSQL's missing table (ProgrammingError) answered 500 with a traceback, /readyz 200."""
    async with remediator(database_url, redis_url, agents) as h:
        assert (await h.client.get("/readyz")).status_code == 200
        with h.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE watchdog_decisions"))
        for path in ("/api/v1/audit", "/api/v1/executions/e1"):
            response = await h.client.get(path, headers=AUTH)
            assert response.status_code == 503, (path, response.text)
            assert response.json() == {"status": "error", "error": "the remediator's tables are missing "
                                       "(watchdog_decisions): restart the remediator to create them"}
        ready = await h.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["missing_tables"] == ["watchdog_decisions"]


# -- secrets ------------------------------------------------------------------------------------------

DB_PASSWORD = "Db-Pa55word-42"  # PostgreSQL here trusts loopback: any password is accepted, so it can be in the URL


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The services' own log set-up (one JSON line per event on stderr, here a buffer), put back afterwards."""
    root, httpx_log = logging.getLogger(), logging.getLogger("httpx")
    handlers, level, httpx_level = root.handlers[:], root.level, httpx_log.level
    buffer = io.StringIO()
    logs.configure_logging("info", "json", stream=buffer)
    try:
        yield buffer
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
        httpx_log.setLevel(httpx_level)


async def test_no_secret_an_agent_prints_reaches_anything_we_store_or_send(
        postgres_url: str, redis_url: str, redis_client: redis.Redis, front: AgentFront,
        json_logs: io.StringIO) -> None:
    """The agent prints its environment on a crash: its derived token, the backend's secret, the webhook
    token, the database password (in a URL and in libpq form) and other credential shapes."""
    database_url = postgres_url.replace("postgres@", f"postgres:{DB_PASSWORD}@")
    token = agent_token(SECRET, "a2")
    printed = {
        "derived token": f"TRINITY_AGENT_AUTH_TOKEN={token}",
        "agent secret": f"backend said {SECRET}!",
        "webhook token": f"hook{TOKEN}hook",
        "database URL": f"DATABASE_URL={database_url}",
        "database password": f"PGPASS {DB_PASSWORD}",  # no shape around it: only knowing it catches it
        "libpq": "host=db password=libpq-pw-77 dbname=trinity",
        "URL credentials": "see https://deploy:url-pw-88@git.example/repo.git",
        "bearer": "curl -H 'Authorization: Bearer bearer-tok-99'",
        "assignment": "OPENAI_API_KEY=sk-live-123456 STRIPE_SECRET=whsec_abcdef",
    }
    secrets = [token, SECRET, TOKEN, DB_PASSWORD, "libpq-pw-77", "url-pw-88", "bearer-tok-99", "sk-live-123456",
               "whsec_abcdef"]
    front.answers[("a2", "/last-error")] = _last_error(" | ".join(printed.values()))
    front.answers[("a1", "/result")] = (500, (" ".join(printed.values())).encode())
    async with remediator(database_url, redis_url, _via(front), claim_defer_seconds=0) as h:
        events = subscriber(redis_url)
        h.add_execution("e-leak", "a2", age_seconds=120)
        h.add_execution("e-5xx", "a1", age_seconds=120)
        answers = [await h.post(notification(alert("e-leak", "a2"))),
                   await h.post(notification(alert("e-5xx", "a1")))]
        assert [_outcomes(r) for r in answers] == [{"e-leak": "recovered"}, {"e-5xx": "retry"}]
        assert "server_error" in answers[1].json()["alerts"][0]["reason"]
        published = json.dumps(received(events, wait=1.0))
        with h.engine.connect() as conn:
            stored = {
                "row": h.row("e-leak").error,
                "decisions": json.dumps([list(r) for r in conn.execute(sa.select(audit.decisions)).all()]),
                "recoveries": json.dumps([list(r) for r in conn.execute(sa.select(audit.recoveries)).all()]),
                "explain": render(load(conn, "e-leak") or {}) + render(load(conn, "e-5xx") or {}),
            }
        served = {
            "webhook answers": "".join(r.text for r in answers),
            "announcement": published,
            "audit API": (await h.client.get("/api/v1/audit", headers=AUTH)).text,
            "story API": "".join([(await h.client.get(f"/api/v1/executions/{e}", headers=AUTH)).text
                                  for e in ("e-leak", "e-5xx")]),
        }
        assert "[Crash] TRINITY_AGENT_AUTH_TOKEN=[redacted]" in stored["row"], stored["row"]
        assert "dbname=trinity" in stored["row"] and "git.example/repo.git" in stored["row"]  # the rest stays
    served["log"] = json_logs.getvalue()
    assert '"event": "recovery"' in served["log"]
    for where, text in {**stored, **served}.items():
        for secret in secrets:
            assert secret not in text, (where, secret)


# -- claims from a hostile /result --------------------------------------------------------------------

def _envelope(**fields: Any) -> tuple[int, bytes]:
    body = {"status": "success", "response": "r", "retained_at": "2026-01-01T00:00:00+00:00",
            "truncated_log": False, **fields}
    return 200, json.dumps(body).encode()  # allow_nan: NaN and Infinity as Python's json writes them


@pytest.fixture
async def claims(database_url: str, redis_url: str, redis_client: redis.Redis,
                 front: AgentFront) -> AsyncIterator[tuple[Harness, AgentFront]]:
    async with remediator(database_url, redis_url, _via(front), claim_defer_seconds=0) as h:
        yield h, front


async def test_a_cost_that_is_negative_nan_or_infinite_is_not_stored(claims: tuple[Harness, AgentFront]) -> None:
    h, front = claims
    costs = {"e-neg": -5, "e-nan": float("nan"), "e-inf": float("inf"), "e-ok": 0.25}
    for execution_id, cost in costs.items():
        front.answers[("a1", f"/{execution_id}/result")] = _envelope(metadata={"cost_usd": cost})
        h.add_execution(execution_id, "a1", age_seconds=300)
    response = await h.post(notification(*(alert(e, "a1") for e in costs)))
    assert set(_outcomes(response).values()) == {"recovered"}, response.text
    assert {e: h.row(e).cost for e in costs} == {"e-neg": None, "e-nan": None, "e-inf": None, "e-ok": 0.25}
    assert {e: h.row(e).status for e in costs} == dict.fromkeys(costs, "success")
    refused = {e: h.evidence(e)[0][1]["retained_result"].get("cost_refused") for e in costs}
    assert refused == {"e-neg": "-5", "e-nan": "nan", "e-inf": "inf", "e-ok": None}


async def test_an_envelope_naming_another_execution_is_refused_and_asked_again(
        claims: tuple[Harness, AgentFront]) -> None:
    h, front = claims
    h.add_execution("e-asked", "a1", age_seconds=300)
    front.answers[("a1", "/result")] = _envelope(execution_id="e-someone-else")
    response = await h.post(notification(alert("e-asked", "a1")))
    assert response.status_code == 503
    [verdict] = response.json()["alerts"]
    assert verdict["outcome"] == "retry" and "names execution 'e-someone-else'" in verdict["reason"], verdict
    assert h.row("e-asked").status == "running" and h.slots.held("a1") == {"e-asked"}
    front.answers[("a1", "/result")] = _envelope(execution_id="e-asked")  # the same id: claimed
    assert _outcomes(await h.post(notification(alert("e-asked", "a1")))) == {"e-asked": "recovered"}
    assert h.row("e-asked").status == "success"


@pytest.mark.parametrize("status", ["running", "pending", "queued", "Success"])
async def test_a_status_that_is_not_terminal_is_never_claimed(claims: tuple[Harness, AgentFront],
                                                               status: str) -> None:
    """Before: every status but success and cancelled was claimed as failed."""
    h, front = claims
    h.add_execution("e-busy", "a1", age_seconds=300)
    front.answers[("a1", "/result")] = _envelope(status=status)
    response = await h.post(notification(alert("e-busy", "a1")))
    assert response.status_code == 503
    [verdict] = response.json()["alerts"]
    assert verdict["outcome"] == "retry" and "not a terminal result" in verdict["reason"], verdict
    assert h.row("e-busy").status == "running" and h.slots.held("a1") == {"e-busy"}


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)))
def test_every_moment_written_reads_back(moment: datetime) -> None:
    """Before: year 999 was written "999-..." (strftime does not pad it), which nothing could read back."""
    written = format_utc(moment)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", written), written
    assert parse_utc(written) == moment
