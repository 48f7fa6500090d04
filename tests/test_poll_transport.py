"""The exporter's lean HTTP/1.1 transport, against real sockets.

The simulated agent server (uvicorn) is the normal peer; the edge cases a well-behaved server
never produces (chunked bodies, close-delimited bodies, dropped keep-alive connections, garbage,
silence) come from a small scripted asyncio server that speaks raw bytes on a real port.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from exec_watchdog.platform_access.agent_client import AgentClient
from exec_watchdog.platform_access.poll_transport import PollTransport
from exec_watchdog.simulated_platform.agent_server import serve_agents
from exec_watchdog.testbed.servers import free_port

SECRET = "transport-secret"
RUNNING = json.dumps({"executions": [{"execution_id": "e1", "pid": 1, "started_at": None, "metadata": {}}],
                      "pending_ids": ["p1"], "recently_completed_ids": []}).encode()

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Scripted:
    """A real TCP server whose every connection runs ``handler(reader, writer, connection_number)``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        return head

    @property
    def template(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/agents/{{agent}}"


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Handler], Awaitable[Scripted]]]:
    made: list[Scripted] = []

    async def make(handler: Handler) -> Scripted:
        s = Scripted(handler)
        s.server = await asyncio.start_server(s._serve, "127.0.0.1", 0)
        made.append(s)
        return s

    yield make
    for s in made:
        assert s.server is not None
        s.server.close()


def client(template: str, timeout: float = 2.0) -> AgentClient:
    return AgentClient(template, SECRET, timeout=timeout, transport=PollTransport(max_connections=4))


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body), extra, body)


async def test_polls_the_simulated_agent_over_one_kept_alive_connection() -> None:
    server = await serve_agents(["a1", "a2"], SECRET)
    agents = client(server.url_template)
    try:
        await server.registry("a1").start("e1", 30)
        first = await agents.running("a1")
        assert first.kind == "answered" and first.unwrap().running_ids == {"e1"}
        assert (await agents.running("a2")).unwrap().running_ids == frozenset()
        wrong = AgentClient(server.url_template, "wrong", transport=PollTransport())
        assert (await wrong.running("a1")).kind == "unauthorized"
        await wrong.aclose()
    finally:
        await agents.aclose()
        await server.stop()


async def test_reuses_connections_and_sends_host_and_token(scripted: Callable[[Handler], Awaitable[Scripted]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        while True:
            await s.read_request(reader)
            writer.write(ok(RUNNING))

    s = await scripted(handler)
    agents = client(s.template)
    for _ in range(5):
        assert "p1" in (await agents.running("a1")).unwrap().pending_ids
    await agents.aclose()
    assert s.connections == 1
    head = s.requests[0].decode().lower()
    assert head.startswith("get /agents/a1/api/executions/running http/1.1\r\n")
    assert "\r\nhost: 127.0.0.1:" in head and "\r\nx-trinity-agent-token: " in head
    assert head.count("accept-encoding") == 1 and "\r\naccept-encoding: identity\r\n" in head


async def test_chunked_body_is_reassembled(scripted: Callable[[Handler], Awaitable[Scripted]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await s.read_request(reader)
        half = len(RUNNING) // 2
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"%x;ext=1\r\n%s\r\n%x\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n" % (
            half, RUNNING[:half], len(RUNNING) - half, RUNNING[half:]))
        await writer.drain()
        await reader.read()

    s = await scripted(handler)
    agents = client(s.template)
    assert (await agents.running("a1")).unwrap().running_ids == {"e1"}
    await agents.aclose()


async def test_close_delimited_http10_body_is_read_to_the_end(
        scripted: Callable[[Handler], Awaitable[Scripted]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await s.read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + RUNNING)
        await writer.drain()

    s = await scripted(handler)
    agents = client(s.template)
    assert (await agents.running("a1")).unwrap().running_ids == {"e1"}
    assert (await agents.running("a1")).unwrap().running_ids == {"e1"}
    await agents.aclose()
    assert s.connections == 2  # HTTP/1.0 without keep-alive: never reused


async def test_a_dropped_idle_connection_is_replaced_transparently(
        scripted: Callable[[Handler], Awaitable[Scripted]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await s.read_request(reader)
        writer.write(ok(RUNNING))
        await writer.drain()
        # Like a keep-alive timeout: the server closes right after answering, without saying so.

    s = await scripted(handler)
    agents = client(s.template)
    for _ in range(3):
        assert (await agents.running("a1")).kind == "answered"
    await agents.aclose()
    assert s.connections == 3


async def test_a_get_lost_on_a_reused_connection_is_resent_once(
        scripted: Callable[[Handler], Awaitable[Scripted]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await s.read_request(reader)
        writer.write(ok(RUNNING))
        await writer.drain()
        if n == 1:
            await s.read_request(reader)  # takes the second request, then hangs up without a byte

    s = await scripted(handler)
    agents = client(s.template)
    assert (await agents.running("a1")).kind == "answered"
    assert (await agents.running("a1")).kind == "answered"
    await agents.aclose()
    assert (s.connections, len(s.requests)) == (2, 3)


async def test_connection_close_header_is_honoured(scripted: Callable[[Handler], Awaitable[Scripted]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await s.read_request(reader)
        writer.write(ok(RUNNING, b"Connection: close\r\n"))
        await writer.drain()
        await asyncio.sleep(0.5)  # still open, but it said close: the client must not reuse it

    s = await scripted(handler)
    agents = client(s.template)
    assert (await agents.running("a1")).kind == "answered"
    assert (await agents.running("a1")).kind == "answered"
    await agents.aclose()
    assert s.connections == 2


async def test_silent_server_is_a_timeout(scripted: Callable[[Handler], Awaitable[Scripted]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await s.read_request(reader)
        await reader.read()  # never answers

    s = await scripted(handler)
    agents = client(s.template, timeout=0.3)
    result = await agents.running("a1")
    await agents.aclose()
    assert result.kind == "timeout"


@pytest.mark.parametrize("reply", [
    b"HELLO WORLD\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"executions\": []}",  # cut short
    b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nbroken header line\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"",  # closed without a byte on a fresh connection
])
async def test_garbage_is_a_failed_poll_never_an_answer(
        reply: bytes, scripted: Callable[[Handler], Awaitable[Scripted]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await s.read_request(reader)
        writer.write(reply)
        await writer.drain()

    s = await scripted(handler)
    agents = client(s.template)
    result = await agents.running("a1")
    await agents.aclose()
    assert result.kind == "unreachable", result


async def test_nothing_listening_is_unreachable() -> None:
    agents = client(f"http://127.0.0.1:{free_port()}/agents/{{agent}}")
    result = await agents.running("a1")
    await agents.aclose()
    assert result.kind == "unreachable"
    assert "ConnectError" in result.detail


async def test_a_cancelled_poll_never_leaves_its_late_answer_for_the_next(
        scripted: Callable[[Handler], Awaitable[Scripted]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            head = await s.read_request(reader)
            if n == 1:
                await asyncio.sleep(0.3)  # the first connection answers late
            agent = head.split(b"/")[2].decode()
            body = json.dumps({"executions": [], "pending_ids": [agent], "recently_completed_ids": []}).encode()
            writer.write(ok(body))
            await writer.drain()

    s = await scripted(handler)
    agents = client(s.template)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(agents.running("first"), 0.1)
    second = (await agents.running("second")).unwrap()
    await agents.aclose()
    assert second.pending_ids == {"second"}


async def test_other_schemes_and_methods_go_to_httpx() -> None:
    transport = PollTransport(fallback=httpx.MockTransport(lambda request: httpx.Response(299)))
    async with httpx.AsyncClient(transport=transport) as http:
        # MockTransport stands in for httpx's TLS transport: no TLS agent server can run here.
        assert (await http.get("https://agent.example/x")).status_code == 299
        assert (await http.post(f"http://127.0.0.1:{free_port()}/x", content=b"{}")).status_code == 299


class _ThroughHttpx(httpx.AsyncBaseTransport):
    """Hides the PollTransport from AgentClient, so its requests take httpx's models: the reference."""

    def __init__(self, inner: PollTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("template_path", ["/agents/{agent}", "/{agent}", "/trinity agents/{agent}"])
async def test_the_lean_get_sends_exactly_the_head_httpx_models_would(
        template_path: str, scripted: Callable[[Handler], Awaitable[Scripted]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        while True:
            await s.read_request(reader)
            writer.write(ok(RUNNING))

    s = await scripted(handler)
    template = s.template.replace("/agents/{agent}", template_path)
    lean = AgentClient(template, SECRET, transport=PollTransport(max_connections=4))
    reference = AgentClient(template, SECRET, transport=_ThroughHttpx(PollTransport(max_connections=4)))
    for agents in (lean, reference):
        assert (await agents.running("a1")).kind == "answered"
        assert (await agents.last_error("a1", "e-1")).kind == "answered"
        await agents.aclose()
    assert len(s.requests) == 4
    assert s.requests[:2] == s.requests[2:]
    assert s.requests[0].startswith(b"GET " + template_path.replace(" ", "%20").replace("{agent}", "a1").encode()
                                    + b"/api/executions/running HTTP/1.1\r\n")


@pytest.mark.parametrize("lean_transport", [True, False])
async def test_a_trickled_result_is_a_timeout_within_the_client_deadline(
        lean_transport: bool, scripted: Callable[[Handler], Awaitable[Scripted]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await s.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):  # a byte every 50 ms: every read is quick, the whole body never is
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.05)

    s = await scripted(handler)
    agents = AgentClient(s.template, SECRET, timeout=0.5,
                         transport=PollTransport(max_connections=4) if lean_transport else None)
    loop = asyncio.get_running_loop()
    asked = loop.time()
    result = await agents.result("a1", "e-1")
    took = loop.time() - asked
    await agents.aclose()
    assert result.kind == "timeout" and "0.5 s" in result.detail, result
    assert took < 2.0


@pytest.mark.parametrize("lean_transport", [True, False])
async def test_a_compressed_result_is_refused_and_never_read_as_an_answer(
        lean_transport: bool, scripted: Callable[[Handler], Awaitable[Scripted]]) -> None:
    import gzip

    body = gzip.compress(json.dumps({"status": "success", "response": "r",
                                     "retained_at": "2026-01-01T00:00:00+00:00"}).encode())

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await s.read_request(reader)
        writer.write(ok(body, b"Content-Encoding: gzip\r\n"))
        await writer.drain()
        await reader.read()

    s = await scripted(handler)
    agents = AgentClient(s.template, SECRET, transport=PollTransport(max_connections=4) if lean_transport else None)
    result = await agents.result("a1", "e-1")
    await agents.aclose()
    assert result.kind == "bad_response" and "Content-Encoding 'gzip'" in result.detail, result
