"""Agents' answers in bounded memory: the body cap, the parse budget, and what a refused answer means.

The hostile agents are real HTTP servers (tests/agent_front.py) in front of the simulated platform.
"""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from exec_watchdog.exporter.gather import Gatherer
from exec_watchdog.platform_access.agent_client import AgentClient, _parse_running
from exec_watchdog.platform_access.answer_limits import (
    DEFAULT_PARSE_BUDGET_BYTES,
    AnswerTooLarge,
    ParseBudget,
    decode_json,
    parse_cost,
)
from exec_watchdog.platform_access.poll_transport import DEFAULT_BODY_BUDGET_BYTES, PollTransport
from exec_watchdog.platform_access.slots import SqlSlots
from exec_watchdog.simulated_platform.agent_server import AgentServer, serve_agents
from exec_watchdog.testbed.platform_rows import insert_agent, insert_execution
from tests.agent_front import AgentFront, agent_front

SECRET = "answer-limits-secret"
NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
HOSTILE = ("oversized", "oversized_chunked", "costly")


@pytest.fixture
async def front() -> AsyncIterator[AgentFront]:
    server: AgentServer = await serve_agents(["a1", "a2"], SECRET)
    try:
        async with agent_front(server) as f:
            yield f
    finally:
        await server.stop()


def _client(front: AgentFront) -> tuple[AgentClient, PollTransport]:
    transport = PollTransport(max_connections=50)
    return AgentClient(front.url_template, SECRET, timeout=20.0, max_connections=50, transport=transport), transport


@pytest.mark.parametrize("behaviour", HOSTILE)
async def test_an_answer_too_large_to_hold_is_too_large_for_that_agent(front: AgentFront, behaviour: Any) -> None:
    """Declared too long, sent too long without a length, or too costly to parse: kind too_large, said so."""
    front.behaviours["big"] = behaviour
    client, _ = _client(front)
    try:
        result = await client.running("big")
    finally:
        await client.aclose()
    assert result.kind == "too_large"
    assert result.detail.startswith("agent answer too large: ")
    assert client.parse_budget.used == 0


async def test_oversized_answers_are_bounded_while_the_other_agents_are_still_read(
        platform: sa.Engine, front: AgentFront) -> None:
    """Three hostile agents beside two honest ones: the honest rows are judged, the hostile ones stay
    unknown (never 'not known by the agent'), and neither budget ever went past its limit."""
    with platform.begin() as c:
        for name in ("a1", "a2", *HOSTILE):
            insert_agent(c, name)
            insert_execution(c, f"e-{name}", name, age_seconds=600, now=NOW)
        insert_execution(c, "e-a1-lost", "a1", age_seconds=600, now=NOW)
    await front.backend.registry("a1").start("e-a1", 60)
    await front.backend.registry("a2").start("e-a2", 60)
    for name in HOSTILE:
        front.behaviours[name] = name  # type: ignore[assignment]
    client, transport = _client(front)
    gatherer = Gatherer(platform, client, SqlSlots(platform), agent_timeout=20.0, scrape_timeout=30.0,
                        clock=lambda: NOW)
    try:
        snapshot = await gatherer.gather()
    finally:
        await client.aclose()
    agents = {a.name: a for a in snapshot.agents}
    known = {e.execution_id: e.agent_known for e in snapshot.executions}
    assert {n: (agents[n].up, agents[n].poll_error) for n in agents} == {
        "a1": (True, ""), "a2": (True, ""), **{n: (False, "too_large") for n in HOSTILE}}
    assert known == {"e-a1": True, "e-a1-lost": False, "e-a2": True, **{f"e-{n}": None for n in HOSTILE}}
    assert snapshot.poll_errors[("costly", "bad_response")] == 1
    assert transport.budget.peak <= DEFAULT_BODY_BUDGET_BYTES
    assert client.parse_budget.peak <= DEFAULT_PARSE_BUDGET_BYTES


def _traced_peak_of_parsing(body: bytes) -> int:
    buffer = bytearray(body)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        parsed = decode_json(buffer)
        if isinstance(parsed, dict) and isinstance(parsed.get("executions"), list):
            kept = _parse_running(parsed)
            del kept
        del parsed
        return tracemalloc.get_traced_memory()[1] + len(body)  # the raw bytes were held too
    finally:
        tracemalloc.stop()


_N = 1024 * 1024
SHAPES = {
    "empty lists": b"[" + b"[]," * (_N // 3) + b"[]]",
    "empty objects": b"[" + b"{}," * (_N // 3) + b"{}]",
    "one-element lists": b"[" + b"[0]," * (_N // 4) + b"[0]]",
    "a wide object": b"{" + b",".join(b'"k%d":1' % i for i in range(_N // 10)) + b"}",
    "short strings": b"[" + b",".join(b'"%04x"' % (i % 65536) for i in range(_N // 7)) + b"]",
    "escaped astral characters": b"[" + b'"\\ud83d\\ude00",' * (_N // 15) + b'"a"]',
    "astral text": ('["' + "\U0001f600" * (_N // 4) + '"]').encode(),
    "floats": b"[" + b"1.5," * (_N // 4) + b"1.5]",
    "minimal executions": b'{"executions":[' + b",".join([b'{"execution_id":"x"}'] * (_N // 21)) + b"]}",
    "executions with ids": b'{"executions":[' + b",".join(
        b'{"execution_id":"%021d"}' % i for i in range(_N // 40)) + b'],"pending_ids":[],"recently_completed_ids":[]}',
    "Trinity-like executions": b'{"executions":[' + b",".join(
        b'{"execution_id":"%022d","pid":%d,"started_at":"2026-11-27T12:00:00","metadata":{"schedule_id":"s",'
        b'"message_preview":"%s"}}' % (i, i, b"m" * 100) for i in range(_N // 200)) + b"]}",
}


@pytest.mark.parametrize("shape", SHAPES)
def test_parse_cost_bounds_what_parsing_a_hostile_shape_takes(shape: str) -> None:
    """The estimate made on raw bytes is never below the memory decoding and parsing them took."""
    body = SHAPES[shape]
    assert _traced_peak_of_parsing(body) <= parse_cost(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=8), inner, max_size=8),
    max_leaves=200)


@settings(max_examples=60, deadline=None)
@given(value=json_values)
def test_parse_cost_bounds_parsing_any_json(value: object) -> None:
    body = json.dumps(value, ensure_ascii=False).encode()
    assert _traced_peak_of_parsing(body) <= parse_cost(body)


async def test_parse_budget_refuses_a_cost_it_can_never_hold() -> None:
    budget = ParseBudget(1000)
    with pytest.raises(AnswerTooLarge, match="more than the"):
        await budget.reserve(1001)
    assert budget.used == 0


async def test_parse_budget_serves_waiters_in_order_and_never_exceeds_its_limit() -> None:
    """A large parse waiting is not overtaken by small ones arriving after it."""
    budget = ParseBudget(100)
    await budget.reserve(60)
    order: list[str] = []

    async def take(name: str, cost: int) -> None:
        await budget.reserve(cost)
        order.append(name)

    big = asyncio.ensure_future(take("big", 90))
    await asyncio.sleep(0)
    small = asyncio.ensure_future(take("small", 20))
    await asyncio.sleep(0)
    assert order == []
    budget.release(60)
    await big
    assert order == ["big"] and not small.done()
    budget.release(90)
    await small
    assert order == ["big", "small"] and budget.used == 20 and budget.peak <= 100


async def test_a_parse_given_up_while_waiting_hands_its_turn_on() -> None:
    budget = ParseBudget(100)
    await budget.reserve(100)
    waiting = asyncio.ensure_future(budget.reserve(50))
    after = asyncio.ensure_future(budget.reserve(50))
    await asyncio.sleep(0)
    waiting.cancel()
    budget.release(100)
    await after
    assert budget.used == 50
    with pytest.raises(asyncio.CancelledError):
        await waiting
