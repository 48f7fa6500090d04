"""A lean HTTP/1.1 keep-alive transport for agent polls (plain ``http://`` GETs only), used by the
exporter and the remediator.

Why: a scrape makes one small GET per agent, a thousand of them within a second. httpx's default
transport (httpcore + anyio) costs about 1 ms of CPU per request here, most of it in the
connection pool's bookkeeping, which alone would exceed the scrape budget. This transport keeps
httpx's API, so :class:`~exec_watchdog.platform_access.agent_client.AgentClient` and its result kinds are
unchanged, and does only what a poll needs: asyncio streams, a per-origin idle list, a
Content-Length, chunked or close-delimited body, and the timeouts httpx passes in the request.
Everything else (``https://``, other methods, request bodies) goes to httpx's own transport.

:meth:`PollTransport.get` is the same exchange without httpx's models: the agent client hands it a
request head it built once per agent and gets a :class:`Polled` answer. Building an
``httpx.Request`` and an ``httpx.Response`` per call (about 40 µs) cost about as much CPU as the
exchange itself (bench/remediator.md), and a mass orphaning makes two calls per orphan.

Failures are raised as the httpx exceptions the client classifies: ``ConnectError``,
``ConnectTimeout``, ``ReadTimeout``, ``ReadError`` and ``RemoteProtocolError``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import cast

import httpx

MAX_RESPONSE_BYTES = 32 * 1024 * 1024  # an agent with tens of thousands of executions is ~5 MB
# Bodies of all polls in flight together: the per-response cap alone lets 50 concurrent 5 MiB
# answers take hundreds of MB. Must be at least MAX_RESPONSE_BYTES so one maximal answer fits.
DEFAULT_BODY_BUDGET_BYTES = MAX_RESPONSE_BYTES
_HEAD_LIMIT = 64 * 1024
_READ_SIZE = 64 * 1024  # bodies are read in pieces into one buffer: never the whole body twice
_DROPPED_HEADERS = frozenset({b"accept-encoding", b"connection", b"keep-alive"})

Origin = tuple[str, int]


class ResponseTooLarge(httpx.RemoteProtocolError):
    """A body longer than ``MAX_RESPONSE_BYTES``: refused as soon as its length is known."""


class _StaleConnection(Exception):
    """A reused keep-alive connection closed before a single byte of the response arrived."""


@contextlib.contextmanager
def _mapped(origin: Origin, timeout_error: type[httpx.TimeoutException],
            os_error: type[httpx.NetworkError]) -> Iterator[None]:
    try:
        yield
    except TimeoutError:
        raise timeout_error(f"no answer from {origin[0]}:{origin[1]} in time") from None
    except asyncio.IncompleteReadError:
        raise httpx.RemoteProtocolError("the server closed the connection mid-response") from None
    except asyncio.LimitOverrunError:
        raise httpx.RemoteProtocolError("response line or headers too long") from None
    except OSError as exc:
        raise os_error(f"{type(exc).__name__}: {exc}") from None


class ByteBudget:
    """Bytes of response bodies held at once, across every request of one transport.

    A body takes its bytes before it is read (all at once when its length is declared, chunk by
    chunk otherwise) and gives them back when httpx closes the response, after the caller read it.
    Waiting for budget counts against the request's read deadline like waiting for the peer.
    """

    def __init__(self, limit: int) -> None:
        if limit < MAX_RESPONSE_BYTES:
            raise ValueError(f"the body budget must hold one maximal response ({MAX_RESPONSE_BYTES} bytes)")
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._freed = asyncio.Condition()

    async def take(self, size: int) -> None:
        async with self._freed:
            await self._freed.wait_for(lambda: self.used + size <= self.limit)
            self.used += size
            self.peak = max(self.peak, self.used)

    async def give(self, size: int) -> None:
        if size:
            async with self._freed:
                self.used -= size
                self._freed.notify_all()


class _Lease:
    """The budget one response holds; given back exactly once."""

    __slots__ = ("budget", "size")

    def __init__(self, budget: ByteBudget) -> None:
        self.budget, self.size = budget, 0

    async def take(self, size: int) -> None:
        await self.budget.take(size)
        self.size += size

    async def end(self) -> None:
        size, self.size = self.size, 0
        await self.budget.give(size)


class Polled:
    """An answer read whole by :meth:`PollTransport.get`: its status, headers and body. Its bytes
    stay counted in the transport's budget until :meth:`aclose`."""

    __slots__ = ("_body", "_fields", "_lease", "headers", "status_code")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], fields: dict[bytes, bytes],
                 body: bytearray, lease: _Lease) -> None:
        self.status_code, self.headers, self._fields = status, headers, fields
        self._body: bytearray | None = body
        self._lease = lease

    def header(self, name: str) -> str:
        """The value of header ``name`` (given in lower case), "" when absent."""
        value = self._fields.get(name.encode("latin-1"))
        return "" if value is None else value.decode("latin-1")

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, handed over once and let go: the reader's buffer is then its only copy."""
        body, self._body = self._body, None
        if body:
            # A bytearray, not a copy as bytes: readers only join, decode and measure it.
            yield cast(bytes, body)

    async def aclose(self) -> None:
        self._body = None
        await self._lease.end()

    async def __aenter__(self) -> Polled:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _BudgetedBody(httpx.AsyncByteStream):
    """A :class:`Polled` answer's body as httpx reads a response stream."""

    def __init__(self, answer: Polled) -> None:
        self._answer = answer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._answer.chunks():
            yield chunk

    async def aclose(self) -> None:
        await self._answer.aclose()


_Exchanged = tuple[int, list[tuple[bytes, bytes]], dict[bytes, bytes], bytearray, bool]


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def usable(self) -> bool:
        # While idle the transport keeps reading: a server that hung up shows as EOF here.
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()

    async def exchange(self, head: bytes, no_body: bool, lease: _Lease) -> _Exchanged:
        """Status, headers as sent, headers by lower-case name, body, and whether to keep the connection."""
        self.writer.write(head)
        await self.writer.drain()
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _StaleConnection from None
            raise
        status, headers, keep_alive = _parse_head(raw)
        while 100 <= status < 200:  # interim responses (a GET gets none in practice): skip them
            status, headers, keep_alive = _parse_head(await self.reader.readuntil(b"\r\n\r\n"))
        fields = {name.lower(): value for name, value in headers}
        body = bytearray()
        if no_body or status in (204, 304):
            return status, headers, fields, body, keep_alive
        if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
            await self._read_chunked(lease, body)
            return status, headers, fields, body, keep_alive
        length = fields.get(b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                raise httpx.RemoteProtocolError(f"bad Content-Length {length!r}")
            size = int(length)
            _check_size(size)
            await lease.take(size)
            return status, headers, fields, await self._read_declared(size), keep_alive
        # Delimited by the server closing: the most it may send is taken up front (the one byte
        # more that proves a body too large is not worth a second maximal share of the budget).
        await lease.take(MAX_RESPONSE_BYTES)
        total = 0
        while more := await self.reader.read(min(_READ_SIZE, MAX_RESPONSE_BYTES + 1 - total)):
            total += len(more)
            _check_size(total)
            body += more
        return status, headers, fields, body, False

    async def _read_declared(self, size: int) -> bytearray:
        """A body of known length, read into one buffer of exactly that size (growing a buffer
        piece by piece can hold it twice while the allocator moves it)."""
        body = bytearray(size)
        filled = 0
        with memoryview(body) as view:  # released before the body is handed over
            while filled < size:
                piece = await self.reader.read(min(size - filled, _READ_SIZE))
                if not piece:
                    raise asyncio.IncompleteReadError(b"", size - filled)
                view[filled:filled + len(piece)] = piece
                filled += len(piece)
        return body

    async def _read_exactly(self, size: int, body: bytearray) -> None:
        while size > 0:
            piece = await self.reader.read(min(size, _READ_SIZE))
            if not piece:
                raise asyncio.IncompleteReadError(b"", size)
            body += piece
            size -= len(piece)

    async def _read_chunked(self, lease: _Lease, body: bytearray) -> None:
        total = 0
        while True:
            line = await self.reader.readuntil(b"\r\n")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise httpx.RemoteProtocolError(f"bad chunk size {size_text!r}") from None
            if size == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers: not needed
                return
            total += size
            _check_size(total)
            await lease.take(size)
            await self._read_exactly(size, body)
            if await self.reader.readexactly(2) != b"\r\n":
                raise httpx.RemoteProtocolError("chunk not followed by CRLF")


def _check_size(size: int) -> None:
    if size > MAX_RESPONSE_BYTES:
        raise ResponseTooLarge(f"response larger than {MAX_RESPONSE_BYTES} bytes")


def _parse_head(raw: bytes) -> tuple[int, list[tuple[bytes, bytes]], bool]:
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise httpx.RemoteProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise httpx.RemoteProtocolError(f"malformed header line {line[:80]!r}")
        headers.append((name, value.strip()))
    tokens = {t.strip().lower() for name, value in headers if name.lower() == b"connection" for t in value.split(b",")}
    keep_alive = b"keep-alive" in tokens if parts[0] == b"HTTP/1.0" else b"close" not in tokens
    return int(parts[1]), headers, keep_alive


def header_lines(request: httpx.Request) -> bytes:
    """The head of ``request`` after its request line, as the transport sends it: without the
    hop-by-hop headers it manages itself, and asking for the body as is (small JSON bodies:
    compressing costs more than it saves)."""
    return b"".join([*(name + b": " + value + b"\r\n" for name, value in request.headers.raw
                       if name.lower() not in _DROPPED_HEADERS),
                     b"Accept-Encoding: identity\r\n\r\n"])


class PollTransport(httpx.AsyncBaseTransport):
    """Plain-HTTP GETs over pooled keep-alive connections; anything else goes to ``fallback``."""

    def __init__(self, *, max_connections: int = 50, fallback: httpx.AsyncBaseTransport | None = None,
                 body_budget_bytes: int = DEFAULT_BODY_BUDGET_BYTES) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.budget = ByteBudget(body_budget_bytes)
        self._max_idle = max_connections
        self._in_flight = asyncio.Semaphore(max_connections)
        self._idle: dict[Origin, list[_Connection]] = {}
        self._idle_count = 0
        self._fallback = fallback or httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http" or request.method not in ("GET", "HEAD") or "content-length" in request.headers \
                or "transfer-encoding" in request.headers:
            return await self._fallback.handle_async_request(request)
        timeouts = request.extensions.get("timeout", {})
        head = b"".join([request.method.encode(), b" ", url.raw_path, b" HTTP/1.1\r\n", header_lines(request)])
        try:
            answer = await self.get((url.host, url.port or 80), head, head_only=request.method == "HEAD",
                                    connect_timeout=timeouts.get("connect"), read_timeout=timeouts.get("read"))
        except httpx.RequestError as exc:
            exc.request = request  # as httpx's own transports hand their errors over
            raise
        return httpx.Response(answer.status_code, headers=answer.headers, stream=_BudgetedBody(answer),
                              request=request, extensions={"http_version": b"HTTP/1.1"})

    async def get(self, origin: Origin, head: bytes, *, head_only: bool = False,
                  connect_timeout: float | None = None, read_timeout: float | None = None) -> Polled:
        """Send ``head`` (a whole GET or HEAD request head, no body) to ``origin`` and read the answer whole.

        ``connect_timeout`` bounds opening a connection and ``read_timeout`` the exchange; a caller
        that bounds the whole call itself passes neither, and no timer is set (a mass orphaning
        makes thousands of calls).
        """
        async with self._in_flight:
            for attempt in (1, 2):
                connection, reused = await self._checkout(origin, connect_timeout)
                lease = _Lease(self.budget)
                try:
                    with _mapped(origin, httpx.ReadTimeout, httpx.ReadError):
                        async with asyncio.timeout(read_timeout):  # None sets no timer
                            status, headers, fields, body, keep_alive = await connection.exchange(
                                head, head_only, lease)
                except _StaleConnection:
                    await lease.end()
                    connection.close()
                    if reused and attempt == 1:
                        continue  # the server dropped an idle connection: a GET is safe to resend
                    raise httpx.RemoteProtocolError("the server closed the connection without answering") from None
                except BaseException:
                    connection.close()  # mid-exchange (cancelled, timed out, garbage): never reuse it
                    await asyncio.shield(lease.end())
                    raise
                if keep_alive:
                    self._checkin(origin, connection)
                else:
                    connection.close()
                size = len(body)
                if lease.size > size:  # a close-delimited body took the most it could be
                    await lease.budget.give(lease.size - size)
                    lease.size = size
                return Polled(status, headers, fields, body, lease)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _checkout(self, origin: Origin, connect_timeout: float | None) -> tuple[_Connection, bool]:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.usable():
                return connection, True
            connection.close()
        with _mapped(origin, httpx.ConnectTimeout, httpx.ConnectError):
            async with asyncio.timeout(connect_timeout):
                reader, writer = await asyncio.open_connection(origin[0], origin[1], limit=_HEAD_LIMIT)
        return _Connection(reader, writer), False

    def _checkin(self, origin: Origin, connection: _Connection) -> None:
        if self._idle_count >= self._max_idle:
            connection.close()
            return
        self._idle.setdefault(origin, []).append(connection)
        self._idle_count += 1

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        self._idle_count = 0
        await self._fallback.aclose()
