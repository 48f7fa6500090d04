"""The agent client against the simulated agent server: typed results for every failure kind."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import httpx
import pytest

from exec_watchdog.platform_access.agent_client import AgentClient, check_url_template
from exec_watchdog.platform_access.auth import agent_token
from exec_watchdog.platform_access.names import InvalidIdentifier, check_execution_id
from exec_watchdog.simulated_platform.agent_server import AgentServer, serve_agents
from exec_watchdog.testbed.servers import free_port

SECRET = "client-test-secret"


@pytest.fixture
async def agents() -> AsyncIterator[AgentServer]:
    server = await serve_agents(["a1", "old"], SECRET, legacy=["old"])
    yield server
    await server.stop()


@pytest.fixture
async def client(agents: AgentServer) -> AsyncIterator[AgentClient]:
    c = AgentClient(agents.url_template, SECRET, timeout=1.0)
    yield c
    await c.aclose()


async def _fault(agents: AgentServer, agent: str, mode: str) -> None:
    async with httpx.AsyncClient() as c:
        r = await c.post(agents.agent_url(agent) + "/sim/fault", json={"mode": mode},
                         headers={"X-Trinity-Agent-Token": agent_token(SECRET, agent)})
        r.raise_for_status()


async def test_running_snapshot_lists_running_pending_and_completed(agents: AgentServer, client: AgentClient) -> None:
    await agents.registry("a1").start("run-1", 30, {"k": "v"})
    result = await client.running("a1")
    assert result.answered
    snapshot = result.unwrap()
    assert snapshot.running_ids == {"run-1"}
    assert snapshot.executions[0].pid and snapshot.executions[0].started_at is not None
    assert snapshot.executions[0].started_at.utcoffset() is not None  # naive on the wire, UTC here
    assert "run-1" in snapshot.running_ids and "other" not in snapshot.running_ids


async def test_older_agents_without_id_lists_are_understood(agents: AgentServer, client: AgentClient) -> None:
    await agents.registry("old").start("r", 30)
    snapshot = (await client.running("old")).unwrap()
    assert snapshot.running_ids == {"r"} and snapshot.pending_ids == frozenset()


async def test_status_terminate_and_last_error(agents: AgentServer, client: AgentClient) -> None:
    await agents.registry("a1").start("run-1", 30)
    status = (await client.status("a1", "run-1")).unwrap()
    assert status.running and status.returncode is None
    assert (await client.status("a1", "nope")).kind == "not_found"
    assert (await client.terminate("a1", "run-1")).unwrap().status == "terminated"
    assert (await client.terminate("a1", "nope")).kind == "not_found"
    assert (await client.last_error("a1", "nope")).kind == "not_found"


async def test_wrong_secret_is_unauthorized_not_unknown(agents: AgentServer) -> None:
    c = AgentClient(agents.url_template, "wrong-secret")
    try:
        assert (await c.running("a1")).kind == "unauthorized"
    finally:
        await c.aclose()


@pytest.mark.parametrize(("mode", "kind"), [("garbage", "bad_response"), ("hang", "timeout"), ("down", "server_error")])
async def test_misbehaving_agents_give_typed_results(agents: AgentServer, client: AgentClient, mode: str,
                                                     kind: str) -> None:
    await _fault(agents, "a1", mode)
    try:
        result = await client.running("a1")
    finally:
        agents.agents["a1"].set_fault("none")
    assert result.kind == kind and not result.answered and result.value is None


async def test_nothing_listening_is_unreachable() -> None:
    c = AgentClient(f"http://127.0.0.1:{free_port()}/agents/{{agent}}", SECRET)
    try:
        assert (await c.running("a1")).kind == "unreachable"
    finally:
        await c.aclose()


@pytest.mark.parametrize("name", ["../x", "a/b", "a@b", "a b", "", "x" * 129, "-a", "_a", ".a", "a\nb", "a%2fb"])
async def test_hostile_agent_names_are_refused_before_any_request(client: AgentClient, name: str) -> None:
    with pytest.raises(InvalidIdentifier):
        await client.running(name)


async def test_host_templates_admit_trinity_names_and_refuse_empty_labels_and_addresses() -> None:
    """``_`` and ``.`` are legal in Trinity names; a host still never gets an empty label or becomes an IP."""
    prefixed = AgentClient("http://agent-{agent}:8000", SECRET)
    bare = AgentClient("http://{agent}:8000", SECRET)
    try:
        assert prefixed.base_url("worker-1") == "http://agent-worker-1:8000"
        assert prefixed.base_url("gamma_ops") == "http://agent-gamma_ops:8000"
        assert prefixed.base_url("ops.v2") == "http://agent-ops.v2:8000"
        for name in ("Upper", "-lead", "a..b", "a.", "x" * 58, "a:1", "a@b"):
            with pytest.raises(InvalidIdentifier):
                prefixed.base_url(name)
        assert bare.base_url("gamma_ops") == "http://gamma_ops:8000"
        for name in ("1.2.3.4", "0x7f.1", "10", "127.1"):
            with pytest.raises(InvalidIdentifier, match="IP address"):
                bare.base_url(name)
    finally:
        await prefixed.aclose()
        await bare.aclose()


async def test_every_token_urlsafe_id_is_accepted(client: AgentClient) -> None:
    """Trinity's ids start with '-' or '_' about 1 time in 32: each one is asked about, none refused."""
    ids = [secrets.token_urlsafe(16) for _ in range(2_000)] + ["-leading", "_leading", "--", "-" * 22]
    assert sum(i[0] in "-_" for i in ids) > 20
    for execution_id in ids:
        assert check_execution_id(execution_id) == execution_id
    for execution_id in ids[-4:]:
        answer = await client.status("a1", execution_id)
        assert answer.kind == "not_found", answer  # asked, and the agent does not know it


@pytest.mark.parametrize("template", ["agent-{agent}:8000", "http://{agent}{agent}", "ftp://x/{agent}",
                                      "http://user:pw@h/{agent}", "http://h/{agent}?q=1", "http://h/{name}"])
def test_bad_url_templates_are_refused_with_an_example(template: str) -> None:
    with pytest.raises(ValueError, match="template"):
        check_url_template(template)


async def test_hostile_execution_ids_are_refused(client: AgentClient) -> None:
    for bad in ("../../etc", "a/b", "a?b", "a b", ""):
        with pytest.raises(InvalidIdentifier):
            await client.status("a1", bad)


@pytest.mark.parametrize("lean_transport", [False, True], ids=["httpx-transport", "poll-transport"])
async def test_a_cookie_an_agent_sets_is_never_sent_back(agents: AgentServer, lean_transport: bool) -> None:
    """One client talks to every agent: a cookie one agent plants must not reach it or another agent."""
    from exec_watchdog.platform_access.poll_transport import PollTransport
    from tests.agent_front import agent_front

    async with agent_front(agents) as front:
        front.behaviours["a1"] = "cookie"
        client = AgentClient(front.url_template, SECRET, timeout=2.0,
                             transport=PollTransport(max_connections=10) if lean_transport else None)
        try:
            for agent in ("a1", "a1", "old"):
                assert (await client.running(agent)).answered
        finally:
            await client.aclose()
    assert front.cookies_received == []
