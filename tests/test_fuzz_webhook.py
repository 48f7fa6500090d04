"""Property-based fuzzing of the webhook: bad input never gets a 5xx and never changes anything.

One "world" per module and database (``exec_watchdog.testbed.fuzz``, shared with
bench/fuzz_webhook.py): the real remediator app (lifespan entered), a real Redis,
SQLite or PostgreSQL, and simulated agents running real processes. Two of its executions are
remediable on purpose (an orphan on a1, an overdue process on a2), so a fuzzed request that
slipped through would visibly act. Each example is checked against a snapshot of every
``schedule_executions`` row, the ``watchdog_recoveries`` rows, every Redis key and both agents'
registries; the last test proves the world was live by recovering both executions for real.

The world runs on its own event-loop thread, so the Hypothesis properties are plain functions
and one app serves hundreds of examples (no per-example lifespan, no loop-scope tricks).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from exec_watchdog.testbed import servers
from exec_watchdog.testbed.fuzz.strategies import (
    any_chars,
    broken_notifications,
    hostile_alerts,
    hostile_text,
    json_bytes,
    json_values,
    malformed_bytes,
)
from exec_watchdog.testbed.fuzz.world import AUTH, JSON, World, check_harmless
from exec_watchdog.testbed.notifications import alert, notification

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
FEWER = settings(FUZZ, max_examples=40)


# -- the world ----------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          redis_url: str) -> Iterator[World]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'trinity.db'}"
    else:
        url = servers.create_database(request.getfixturevalue("postgres_server_url"))
    w = World(url, redis_url)
    yield w
    w.close()


@pytest.fixture
def unchanged(world: World) -> Iterator[dict[str, Any]]:
    """The world's state before the test; the test compares against it after every example."""
    world.announcements()
    before = world.snapshot()
    yield before
    assert world.snapshot() == before
    assert world.announcements() == []
    assert world.request("GET", "/healthz").json() == {"status": "ok"}


def _orphan_with(**changes: str) -> dict[str, Any]:
    """The remediable orphan alert with some labels or fields replaced."""
    body = notification(alert("e-orphan", "a1"))
    a = body["alerts"][0]
    for key, value in changes.items():
        (a["labels"] if key in ("agent", "execution_id", "alertname", "remediation") else a)[key] = value
    return body


# -- properties ---------------------------------------------------------------------------------

def test_broken_notifications_get_4xx_or_are_ignored_and_change_nothing(world: World,
                                                                        unchanged: dict[str, Any]) -> None:
    @FUZZ
    @given(body=broken_notifications())
    # Found by this property; kept as explicit cases.
    @example(body=_orphan_with(agent="\ud800"))  # unpaired surrogate: cannot be stored or answered
    @example(body=_orphan_with(execution_id="e-orphan\x00"))  # NUL: PostgreSQL refuses it in text
    @example(body=_orphan_with(alertname="ExecWatchdogExecutionOrphaned\x00"))
    @example(body=_orphan_with(startsAt="0001-01-01T00:00:00+01:00"))  # before year 1 once in UTC
    @example(body=_orphan_with(endsAt="9999-12-31T23:59:59-01:00"))  # after year 9999 once in UTC
    def prop(body: dict[str, Any]) -> None:
        check_harmless(world.post_body(json_bytes(body)), world, unchanged)

    prop()


def test_fuzzed_alert_labels_never_act(world: World, unchanged: dict[str, Any]) -> None:
    """Unicode, control characters, SQL and path injection in labels: ignored or skipped, never acted on."""
    @FUZZ
    @given(alerts=st.lists(hostile_alerts(), min_size=1, max_size=5))
    def prop(alerts: list[dict[str, Any]]) -> None:
        response = world.post_body(json_bytes(notification(*alerts)))
        check_harmless(response, world, unchanged)

    prop()


def test_malformed_json_gets_400(world: World, unchanged: dict[str, Any]) -> None:
    @FUZZ
    @given(body=malformed_bytes())
    def prop(body: bytes) -> None:
        response = world.post_body(body)
        check_harmless(response, world, unchanged)
        assert response.status_code == 400

    prop()


def test_arbitrary_json_documents_get_400(world: World, unchanged: dict[str, Any]) -> None:
    @FUZZ
    @given(body=json_values)
    def prop(body: object) -> None:
        response = world.post_body(json_bytes(body))
        check_harmless(response, world, unchanged)
        assert response.status_code == 400

    prop()


def test_content_types_other_than_json_get_415(world: World, unchanged: dict[str, Any]) -> None:
    valid = json_bytes(notification(alert("e-orphan", "a1")))

    @FEWER
    @given(content_type=st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40)
           | st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                              "application/jsonp", "application/json-seq", "text/json", "json", ""]))
    def prop(content_type: str) -> None:
        assume(content_type.split(";")[0].strip().lower() != "application/json")
        response = world.post_body(valid, {**AUTH, "Content-Type": content_type.encode("latin-1")})
        check_harmless(response, world, unchanged)
        assert response.status_code == 415

    prop()


@pytest.mark.parametrize("depth", [100, 1_000, 100_000, 1_000_000])
def test_deeply_nested_bodies_get_400(world: World, unchanged: dict[str, Any], depth: int) -> None:
    valid = json_bytes(notification(alert("e-orphan", "a1")))
    in_label = valid.replace(b'"agent": "a1"', b'"agent": ' + b"[" * depth + b"]" * depth)
    for body in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth,
                 b'{"version":"4","status":"firing","alerts":' + b"[" * depth + b"]" * depth + b"}", in_label):
        response = world.post_body(body)
        check_harmless(response, world, unchanged)
        assert response.status_code in (400, 413)  # the longest ones are over the size limit too


def test_bodies_over_the_limit_get_413_declared_or_streamed(world: World, unchanged: dict[str, Any]) -> None:
    limit = world.harness.config.max_body_bytes
    huge = notification(alert("e-orphan", "a1", summary="x" * limit))
    response = world.post_body(json_bytes(huge))
    check_harmless(response, world, unchanged)
    assert response.status_code == 413

    async def chunks() -> Any:  # no Content-Length: the limit must hold while streaming
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    streamed = world.request("POST", "/api/v1/alerts", content=chunks(), headers=JSON)
    check_harmless(streamed, world, unchanged)
    assert streamed.status_code == 413


def test_a_body_just_under_the_limit_full_of_ignored_alerts_is_handled(world: World,
                                                                       unchanged: dict[str, Any]) -> None:
    one = alert("e-orphan", "a1", status="resolved", fingerprint="0" * 16)
    size = len(json_bytes(one)) + 2
    many = [dict(one, fingerprint=f"{i:016x}") for i in range(world.harness.config.max_body_bytes // size - 10)]
    body = json_bytes(notification(*many))
    assert world.harness.config.max_body_bytes - 5000 < len(body) <= world.harness.config.max_body_bytes
    response = world.post_body(body)
    check_harmless(response, world, unchanged)
    assert response.status_code == 200


def test_huge_label_values_are_ignored(world: World, unchanged: dict[str, Any]) -> None:
    for label in ("agent", "execution_id", "remediation"):
        body = notification(alert("e-orphan", "a1"))
        body["alerts"][0]["labels"][label] = "a1" + "\u00e9" * 1_000_000  # 2 MB of UTF-8
        response = world.post_body(json.dumps(body, ensure_ascii=False).encode())
        check_harmless(response, world, unchanged)
        assert response.status_code == 200


def test_audit_api_answers_any_query_without_5xx(world: World, unchanged: dict[str, Any]) -> None:
    keys = st.sampled_from(["agent", "execution_id", "limit"]) | st.text(any_chars, max_size=10)
    values = st.sampled_from(["1", "1000", "1001", "0", "-1", "1e3", " 1", "\u00b2", "\u0661", "\uff11", "\x00"]) \
        | hostile_text

    @FEWER
    @given(params=st.lists(st.tuples(keys, values), max_size=4))
    @example(params=[("limit", "\u00b2")])  # str.isdigit() says yes, int() says no
    @example(params=[("agent", "a1\x00")])  # PostgreSQL refuses NUL in text
    def prop(params: list[tuple[str, str]]) -> None:
        query = urllib.parse.urlencode([(k.encode("utf-8", "surrogatepass"), v.encode("utf-8", "surrogatepass"))
                                        for k, v in params])
        response = world.request("GET", f"/api/v1/audit?{query}", headers=AUTH)
        assert response.status_code in (200, 400), f"{response.status_code}: {response.text[:300]}"
        if response.status_code == 200:
            assert isinstance(response.json()["decisions"], list)
        assert world.snapshot() == unchanged

    prop()


def test_after_the_fuzz_the_process_is_healthy_and_valid_alerts_still_act(world: World) -> None:
    """The positive control: the same world recovers both executions when the alerts are right."""
    world.announcements()
    assert world.request("GET", "/healthz").json() == {"status": "ok"}
    assert world.request("GET", "/readyz").json()["status"] == "ready"
    pid = next(e.pid for e in world.call(lambda: _running(world, "a2")))
    response = world.post_body(json_bytes(notification(alert("e-orphan", "a1"),
                                                   alert("e-overdue", "a2", "terminate_overdue"))))
    assert response.status_code == 200, response.text
    assert {a["outcome"] for a in response.json()["alerts"]} == {"recovered"}
    assert world.harness.row("e-orphan").status == "failed"
    assert world.harness.row("e-overdue").status == "failed"
    assert world.harness.row("e-running").status == "running"
    assert world.harness.slots.held("a1") == {"e-running", "x'; DROP TABLE schedule_executions;--"}
    assert pid is not None and not _alive(pid)
    assert {(e["execution_id"], e["action"]) for e in world.announcements()} == {
        ("e-orphan", "orphan_recovered"), ("e-overdue", "auto_terminated")}


async def _running(world: World, agent: str) -> Any:
    return world.agents.registry(agent).running()


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False

