"""A real HTTP front for the simulated agents that can misbehave per agent, for hostile tests.

Requests to ``/agents/{name}/...`` are forwarded to the simulated agent server (real processes
behind it) unless ``name`` is set to misbehave: ``trickle`` (a real slow socket: the head, then one
body byte every 2 s), ``error`` (500 at once), ``deep`` (JSON nested 100,000 deep), ``oversized`` (a
``Content-Length`` of 33 MiB), ``oversized_chunked`` (chunked, 40 MiB without a declared length) or
``costly`` (a valid ``/running`` answer of ~20 MiB whose parse would take far more) or ``cookie``
(forwarded, with a ``Set-Cookie`` added; every ``Cookie`` header received is kept); ``answers``
scripts one route of one agent (e.g. a ``/last-error`` body no real agent server would send). It counts
every terminate per execution id and can run a hook right after a forwarded terminate (the
platform's own exit report racing our update).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Literal

import httpx

from exec_watchdog.simulated_platform.agent_server import AgentServer

Behaviour = Literal["trickle", "error", "deep", "oversized", "oversized_chunked", "costly", "cookie"]
_MIB = 1024 * 1024
_COSTLY_ENTRY = (b'{"execution_id":"costly-000000000000000","pid":4242,"started_at":"2026-11-27T12:00:00.123456",'
                 b'"metadata":{"schedule_id":"nightly","triggered_by":"schedule","message_preview":"'
                 + b"m" * 100 + b'"}}')


class AgentFront:
    def __init__(self, backend: AgentServer) -> None:
        self.backend = backend
        self.behaviours: dict[str, Behaviour] = {}
        self.terminates: Counter[str] = Counter()
        self.cookies_received: list[str] = []
        # (agent, path suffix) -> (status, body): that route of that agent answers this, the rest is forwarded
        self.answers: dict[tuple[str, str], tuple[int, bytes]] = {}
        self.after_terminate: Callable[[str], None] | None = None
        self.url_template = ""
        self._http = httpx.AsyncClient(timeout=30)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url_template = f"http://127.0.0.1:{port}/agents/{{agent}}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            method, target, _ = head.split("\r\n", 1)[0].split(" ", 2)
            headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
            _, _, name, rest = target.split("/", 3)
            await self._answer(writer, method, name, "/" + rest, headers)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError, ValueError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _answer(self, writer: asyncio.StreamWriter, method: str, name: str, path: str,
                      headers: dict[str, str]) -> None:
        self.cookies_received += [v for k, v in headers.items() if k.lower() == "cookie"]
        if path.endswith("/terminate"):
            self.terminates[path.split("/")[-2]] += 1
        behaviour = self.behaviours.get(name)
        if behaviour == "trickle":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            while True:
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(2)
        if behaviour == "error":
            return _respond(writer, 500, b'{"detail":"boom"}')
        if behaviour == "deep":
            return _respond(writer, 200, b'{"executions":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
        for (agent, suffix), (status, body) in self.answers.items():
            if agent == name and path.endswith(suffix):
                return _respond(writer, status, body)
        if behaviour == "oversized":
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {33 * _MIB}\r\n"
                         "\r\n".encode() + b" " * _MIB)
            return await writer.drain()
        if behaviour == "oversized_chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            piece = f"{_MIB:x}\r\n".encode() + b" " * _MIB + b"\r\n"
            for _ in range(40):
                writer.write(piece)
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            return await writer.drain()
        if behaviour == "costly":
            count = 20 * _MIB // len(_COSTLY_ENTRY)
            return _respond(writer, 200, b'{"executions":[' + b",".join([_COSTLY_ENTRY] * count) + b"]}")
        token = {k: v for k, v in headers.items() if k.lower() == "x-trinity-agent-token"}
        response = await self._http.request(method, self.backend.agent_url(name) + path, headers=token)
        if path.endswith("/terminate") and self.after_terminate is not None:
            self.after_terminate(path.split("/")[-2])
        extra = "Set-Cookie: planted=1; Path=/\r\n" if behaviour == "cookie" else ""
        return _respond(writer, response.status_code, response.content, extra)


def _respond(writer: asyncio.StreamWriter, status: int, body: bytes, extra_headers: str = "") -> None:
    writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                 f"{extra_headers}Connection: close\r\n\r\n".encode() + body)


@contextlib.asynccontextmanager
async def agent_front(backend: AgentServer) -> AsyncIterator[AgentFront]:
    front = AgentFront(backend)
    await front.start()
    try:
        yield front
    finally:
        await front.stop()
