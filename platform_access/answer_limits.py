"""Bounded memory for agents' answers: a cap on each body, and a budget for parsing them.

An agent's answer is data we do not control. Its size on the wire does not bound what it costs
once read: ``json.loads`` of 31 MiB of small objects takes several hundred MiB, so a few agents
with huge ``/api/executions/running`` answers could take the exporter far past its memory goal.
Two rules, applied by :class:`~exec_watchdog.platform_access.agent_client.AgentClient`:

1. **Each body is streamed and counted before it is decoded** (:func:`read_capped`): a declared
   ``Content-Length`` over the cap is refused before a byte is read, an undeclared one as soon as
   the count passes it. Bytes go into one buffer, never bytes + a joined copy.
2. **Parsing is paid for up front** (:class:`ParseBudget`): :func:`parse_cost` bounds what decoding
   and parsing the body can take (the raw bytes, the decoded text, the objects), from counts made
   on the raw bytes, and the parse waits until the client's budget holds it. One answer whose
   cost exceeds the whole budget is refused.

A refused answer is :class:`AnswerTooLarge`; the client reports it as that agent's
``too_large`` result ("agent answer too large"): the agent could not be asked properly, which is
never the same as "the agent does not know the execution".
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

# What one object of a parsed answer can cost per structural byte (``[ { , :``) on the wire, beyond
# the text itself: the worst shapes measured on CPython 3.11 (``[{},{},…]``, wide objects, escaped
# astral characters) stay under 75; tests/test_answer_limits.py checks the bound holds.
BYTES_PER_STRUCTURAL = 128
_FIXED_COST = 64 * 1024  # the parser's own state, whatever the body
DEFAULT_PARSE_BUDGET_BYTES = 128 * 1024 * 1024  # answers parsed at once, by parse_cost
_STRUCTURAL = (b"[", b"{", b",", b":")


class AnswerTooLarge(Exception):
    """An agent's answer that would take more memory than it may: refused, not parsed."""


def parse_cost(body: bytes | bytearray) -> int:
    """An upper bound on the peak memory of decoding and parsing ``body`` (and its raw bytes).

    The decoded text takes one byte per character for ASCII and up to four otherwise; parsed
    strings hold at most the text's characters again; every other object, and every string's own
    overhead, starts at a structural byte (each JSON value follows ``[``, ``,`` or ``:``, each key
    ``{`` or ``,``), counted on the raw bytes (those inside strings too: an overestimate, safe).
    """
    size = len(body)
    text = size if body.isascii() else 4 * size
    structural = sum(body.count(mark) for mark in _STRUCTURAL) + 1
    return _FIXED_COST + size + 2 * text + BYTES_PER_STRUCTURAL * structural


class ParseBudget:
    """Memory for answers being parsed, across every request of one client; first come, first served.

    :meth:`release` is synchronous: a caller that drops the parsed answer's bulk right after it
    (before its next ``await``) never overlaps with the next parse.
    """

    def __init__(self, limit: int = DEFAULT_PARSE_BUDGET_BYTES) -> None:
        if limit < 1:
            raise ValueError("the parse budget must be positive")
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def reserve(self, cost: int) -> None:
        """Wait until ``cost`` fits; :class:`AnswerTooLarge` if it never can."""
        if cost > self.limit:
            raise AnswerTooLarge(f"parsing it would take up to {_mib(cost)} MiB, more than the "
                                 f"{_mib(self.limit)} MiB budget for answers")
        if not self._waiting and self.used + cost <= self.limit:
            self._grant(cost)
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((cost, granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(cost)  # granted just as the caller gave up: hand it on
            else:
                granted.cancel()
                self._wake()
            raise

    def release(self, cost: int) -> None:
        self.used -= cost
        self._wake()

    def _grant(self, cost: int) -> None:
        self.used += cost
        self.peak = max(self.peak, self.used)

    def _wake(self) -> None:
        while self._waiting:
            cost, granted = self._waiting[0]
            if granted.done():  # its caller gave up
                self._waiting.popleft()
                continue
            if self.used + cost > self.limit:
                return
            self._waiting.popleft()
            self._grant(cost)
            granted.set_result(None)


class CompressedAnswer(ValueError):
    """A body sent with a content coding although the client asked for ``identity``."""


class Answer(Protocol):
    """An agent's answer as the client reads it, whichever transport carried it."""

    status_code: int

    def header(self, name: str) -> str:
        """The value of header ``name`` (given in lower case), "" when absent."""

    def chunks(self) -> AsyncIterator[bytes]:
        """The body's pieces as sent (no content decoding)."""

    async def aclose(self) -> None:
        """Let the answer go (its connection, its share of a transport's budget)."""

    async def __aenter__(self) -> Answer:
        """The answer itself; :meth:`aclose` when the block ends."""

    async def __aexit__(self, *exc_info: object) -> None:
        """:meth:`aclose`."""


async def read_capped(answer: Answer, limit: int) -> bytearray:
    """The body as sent (no content decoding), refused with :class:`AnswerTooLarge` past ``limit`` bytes."""
    declared = answer.header("content-length")
    if declared.strip().isdigit() and int(declared) > limit:
        raise AnswerTooLarge(f"it declares {_mib(int(declared))} MiB, more than the {_mib(limit)} MiB cap")
    coding = (answer.header("content-encoding") or "identity").strip().lower()
    if coding not in ("", "identity"):
        raise CompressedAnswer(f"it is sent with Content-Encoding {coding[:40]!r}; identity was asked for")
    body = bytearray()
    async for chunk in answer.chunks():
        if len(body) + len(chunk) > limit:
            raise AnswerTooLarge(f"it is longer than the {_mib(limit)} MiB cap")
        if not body and isinstance(chunk, bytearray):
            body = chunk  # the poll transport's own buffer, handed over whole: no copy
        else:
            body += chunk
    return body


def decode_json(body: bytearray) -> object:
    """Parse ``body``, emptying it as soon as its text is decoded (the bytes and the parse never
    overlap): ``ValueError`` (or ``RecursionError``) for anything that is not JSON."""
    text = body.decode(json.detect_encoding(body), "surrogatepass")
    body.clear()
    return json.loads(text)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f}"
