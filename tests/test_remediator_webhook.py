"""The webhook's status-code policy and input handling, on the real ASGI app."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from exec_watchdog.remediator.auth import Credentials
from exec_watchdog.remediator.payload import PayloadError, parse_notification
from exec_watchdog.simulated_platform.agent_server import AgentServer, serve_agents
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.remediator_harness import SECRET, Harness

FIXTURES = Path(__file__).with_name("fixtures")


@pytest.fixture
async def agents() -> AsyncIterator[AgentServer]:
    server = await serve_agents(["a1", "a2"], SECRET)
    yield server
    await server.stop()


def _fixture(name: str) -> object:
    return json.loads((FIXTURES / "alertmanager" / name).read_text())


async def test_missing_or_wrong_credentials_get_401(harness: Harness) -> None:
    assert (await harness.post(notification(), token=None)).status_code == 401
    assert (await harness.post(notification(), token="nope")).status_code == 401
    response = await harness.client.post("/api/v1/alerts", json=notification(),
                                         headers={"Authorization": "Basic " + base64.b64encode(b"x:y").decode()})
    assert response.status_code == 401
    assert (await harness.client.get("/api/v1/audit")).status_code == 401
    assert (await harness.client.post("/api/v1/breaker/reset")).status_code == 401


def test_basic_auth_is_accepted_in_constant_time_form() -> None:
    creds = Credentials(basic_user="am", basic_password="s3cret")
    good = "Basic " + base64.b64encode(b"am:s3cret").decode()
    assert creds.accepts(good)
    assert not creds.accepts("Basic " + base64.b64encode(b"am:wrong").decode())
    assert not creds.accepts("Basic !!!notbase64")
    assert not creds.accepts(None)


def test_starting_without_a_credential_needs_the_explicit_opt_out() -> None:
    with pytest.raises(ValueError, match="--insecure-no-auth"):
        Credentials()
    assert Credentials(allow_unauthenticated=True).accepts(None)


async def test_wrong_content_type_gets_415(harness: Harness) -> None:
    response = await harness.client.post("/api/v1/alerts", content=b"{}", headers={
        "Authorization": "Bearer test-webhook-token", "Content-Type": "text/plain"})
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]


async def test_oversized_body_gets_413(harness: Harness) -> None:
    big = notification(*[alert(f"e{i}", "a1", fingerprint=f"{i:016x}") for i in range(20000)])
    response = await harness.post(big)
    assert response.status_code == 413


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "malformed JSON"),
    (b"[]", "JSON object"),
    (json.dumps({**notification(), "version": "3"}).encode(), "version 4"),
    (json.dumps({**notification(), "alerts": "x"}).encode(), "'alerts' must be a list"),
    (json.dumps(notification({**alert("e1", "a1"), "labels": {"agent": 7}})).encode(), "labels"),
    (json.dumps(notification({**alert("e1", "a1"), "startsAt": "soon"})).encode(), "startsAt"),
    (json.dumps(notification({**alert("e1", "a1"), "status": "exploded"})).encode(), "'firing' or 'resolved'"),
    (b"[" * 100000 + b"]" * 100000, "malformed JSON"),
])
async def test_malformed_bodies_get_400_saying_what_is_wrong(harness: Harness, body: bytes, message: str) -> None:
    response = await harness.client.post("/api/v1/alerts", content=body, headers={
        "Authorization": "Bearer test-webhook-token", "Content-Type": "application/json"})
    assert response.status_code == 400
    assert message in response.json()["error"]


async def test_captured_real_payloads_parse() -> None:
    firing = parse_notification(_fixture("firing.json"))
    resolved = parse_notification(_fixture("resolved.json"))
    assert firing.alerts[0].status == "firing" and firing.alerts[0].ends_at is None
    assert resolved.alerts[0].status == "resolved" and resolved.alerts[0].ends_at is not None
    assert firing.alerts[0].fingerprint == resolved.alerts[0].fingerprint
    ha = _fixture("ha_pair_stale_firing_after_resolved.json")
    assert isinstance(ha, list)
    for delivery in ha:
        parse_notification(delivery["body"])
    with pytest.raises(PayloadError):
        parse_notification({"version": "4"})


async def test_resolved_notifications_are_recorded_and_never_acted_on(harness: Harness) -> None:
    harness.add_execution("e1", "a1")
    response = await harness.post(notification(alert("e1", "a1", status="resolved")))
    assert response.status_code == 200
    assert response.json()["alerts"][0]["outcome"] == "ignored"
    assert harness.row("e1").status == "running"
    audit = (await harness.client.get("/api/v1/audit", headers={"Authorization": "Bearer test-webhook-token"})).json()
    assert audit["decisions"][0]["alert_status"] == "resolved"


async def test_captured_real_payload_without_remediation_label_is_acknowledged(harness: Harness) -> None:
    response = await harness.post(_fixture("firing.json"))
    assert response.status_code == 200
    assert response.json()["alerts"][0]["outcome"] == "ignored"
    assert harness.sample("exec_watchdog_remediator_alerts_total", status="firing", remediation="none") == 1


@pytest.mark.parametrize(("agent", "execution_id"), [
    ("../../admin", "e1"), ("a1@evil.example", "e1"), ("a 1", "e1"), ("a" * 200, "e1"),
    ("a1", "../../x"), ("a1", "e1?x=1"), ("a1", "e1/terminate"), ("a1", "'; DROP TABLE schedule_executions;--"),
])
async def test_hostile_labels_are_acknowledged_and_change_nothing(harness: Harness, agent: str,
                                                                  execution_id: str) -> None:
    harness.add_execution("e1", "a1")
    response = await harness.post(notification(alert(execution_id, agent)))
    assert response.status_code == 200
    assert response.json()["alerts"][0]["outcome"] == "ignored"
    assert harness.row("e1").status == "running"
    assert harness.slots.held("a1") == {"e1"}


async def test_audit_api_rejects_bad_parameters(harness: Harness) -> None:
    headers = {"Authorization": "Bearer test-webhook-token"}
    assert (await harness.client.get("/api/v1/audit?limit=0", headers=headers)).status_code == 400
    assert (await harness.client.get("/api/v1/audit?limit=abc", headers=headers)).status_code == 400
    assert (await harness.client.get("/api/v1/audit?bogus=1", headers=headers)).status_code == 400


async def test_health_readiness_and_metrics(harness: Harness) -> None:
    assert (await harness.client.get("/healthz")).json() == {"status": "ok"}
    assert (await harness.client.get("/readyz")).json()["status"] == "ready"
    await harness.post(notification(), token=None)
    text = (await harness.client.get("/metrics")).text
    assert 'exec_watchdog_remediator_requests_total{code="401"} 1.0' in text
    assert "exec_watchdog_remediator_breaker_open 0.0" in text


async def test_recoveries_page_is_served(harness: Harness) -> None:
    response = await harness.client.get("/")
    assert response.status_code == 200 and "on call" in response.text and "/static/console.js" in response.text


def test_fixture_files_are_the_project_s_own_copies() -> None:
    assert Path(FIXTURES, "alertmanager", "firing.json").is_file()


async def test_unreachable_remediator_agent_means_retry_not_orphan(harness: Harness, agents: AgentServer) -> None:
    harness.add_execution("e1", "a1")
    async with httpx.AsyncClient() as c:
        await c.post(agents.agent_url("a1") + "/sim/fault", json={"mode": "down"},
                     headers={"X-Trinity-Agent-Token": __import__("exec_watchdog.platform_access.auth", fromlist=["x"])
                              .agent_token(SECRET, "a1")})
    response = await harness.post(notification(alert("e1", "a1")))
    assert response.status_code == 503
    assert response.json()["alerts"][0]["outcome"] == "retry"
    assert harness.row("e1").status == "running"
    assert harness.slots.held("a1") == {"e1"}
