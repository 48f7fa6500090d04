"""Async client for Trinity's agent server API, with results that keep failure kinds apart.

"The agent answered and does not know the execution" is the only thing that may ever make an
execution look orphaned, so every call returns an :class:`AgentResult` whose ``kind`` separates
answered, unreachable, timed out, unauthorized, not found, garbage and too large.

Every text an agent sends (``/last-error``, a retained result's texts, a 5xx body) enters here, and
only once: normalised (``common/untrusted.py``: valid Unicode, no control characters but newline and
tab, bounded) and redacted (``common/redaction.py``: the known secrets, this agent's derived token
included, and credential shapes; a run's own response and transcript lose the known secrets only).

Every body is read with a cap and parsed within the client's budget
(:mod:`exec_watchdog.platform_access.answer_limits`): an answer too large to hold is the kind
``too_large`` ("agent answer too large"), a failure to ask the agent like any other.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from http.cookiejar import CookieJar
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit

import httpx

from exec_watchdog.common import redaction
from exec_watchdog.common.untrusted import clean
from exec_watchdog.platform_access.answer_limits import (
    Answer,
    AnswerTooLarge,
    CompressedAnswer,
    ParseBudget,
    decode_json,
    parse_cost,
    read_capped,
)
from exec_watchdog.platform_access.auth import TOKEN_HEADER, agent_token
from exec_watchdog.platform_access.names import check_agent_name, check_host, execution_path, path_segment
from exec_watchdog.platform_access.poll_transport import (
    MAX_RESPONSE_BYTES,
    Origin,
    PollTransport,
    ResponseTooLarge,
    header_lines,
)
from exec_watchdog.platform_access.retained import (
    MAX_BODY_BYTES,
    BadRetainedResult,
    NoRetainedResult,
    RetainedResult,
    is_coded_missing,
    parse_retained,
)
from exec_watchdog.platform_access.timestamps import BadTimestamp, parse_utc

T = TypeVar("T")
ResultKind = Literal["answered", "unreachable", "timeout", "unauthorized", "not_found", "bad_response",
                     "server_error", "too_large"]
DEFAULT_URL_TEMPLATE = "http://agent-{agent}:8000"
MAX_ERROR_BODY_CHARS = 200  # of a 5xx body, in the retry reason
MAX_LAST_ERROR_TYPE_CHARS = 200
MAX_LAST_ERROR_CHARS = 2_000  # Trinity caps the whole failure text at 2,000 characters
_SECRET_SLACK = 4_096  # redacted before the final cut, so a cut can never leave half a secret
_MARK = "zzagentmarkzz"  # stands in for {agent} while the template is parsed
MAX_ANSWER_BYTES = MAX_RESPONSE_BYTES  # one JSON answer's body on the wire (before any decoding)
_ERROR_TEXT_BYTES = 4096  # of a 5xx body: only its first 200 characters are kept
MAX_KEPT_WIRES = 20_000  # agents whose request head is kept built (a fleet is a few thousand)


@dataclass(frozen=True, slots=True)
class AgentResult(Generic[T]):
    kind: ResultKind
    value: T | None = None
    detail: str = ""

    @property
    def answered(self) -> bool:
        return self.kind == "answered"

    def unwrap(self) -> T:
        if self.value is None:
            raise RuntimeError(f"agent result is {self.kind}: {self.detail}")
        return self.value


@dataclass(frozen=True, slots=True)
class RunningEntry:
    execution_id: str
    pid: int | None
    started_at: datetime | None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunningSnapshot:
    """``GET /api/executions/running``; older agents send only ``executions``."""

    executions: tuple[RunningEntry, ...]
    recently_completed_ids: frozenset[str]
    pending_ids: frozenset[str]
    reports_pending: bool = True  # False for an image from before pending_ids (Trinity #2433)

    @property
    def running_ids(self) -> frozenset[str]:
        return frozenset(e.execution_id for e in self.executions)


@dataclass(frozen=True, slots=True)
class ExecutionStatus:
    execution_id: str
    running: bool
    returncode: int | None


@dataclass(frozen=True, slots=True)
class TerminateOutcome:
    status: Literal["terminated", "already_finished"]
    returncode: int | None = None


@dataclass(frozen=True, slots=True)
class LastError:
    error_type: str | None
    error_message: str | None


class BadAgentResponse(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class _AgentWire:
    """What every request to one agent shares, worked out once per agent."""

    base: str  # the agent's base URL
    token: str
    origin: Origin  # host and port, for the poll transport
    target_prefix: bytes  # the base URL's path, as the request line carries it
    header_lines: bytes  # the request head after its request line, token included


def check_url_template(template: str) -> str:
    """A template must be an http(s) URL with exactly one ``{agent}`` placeholder."""
    if template.count("{agent}") != 1 or any(k in template.replace("{agent}", "") for k in "{}"):
        raise ValueError(f"agent URL template {template!r} must contain '{{agent}}' exactly once "
                         "and no other braces, e.g. http://agent-{agent}:8000")
    parts = urlsplit(template.replace("{agent}", "x"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"agent URL template {template!r} must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"agent URL template {template!r} must not carry credentials, a query or a fragment")
    return template.rstrip("/")


class AgentClient:
    """One ``httpx.AsyncClient`` for all agents; the caller owns its lifetime (``aclose``)."""

    def __init__(self, url_template: str, secret: str, *, timeout: float = 5.0,
                 terminate_timeout: float = 15.0, max_connections: int = 200,
                 transport: httpx.AsyncBaseTransport | None = None, parse_budget: ParseBudget | None = None,
                 max_answer_bytes: int = MAX_ANSWER_BYTES, redactor: redaction.Redactor = redaction.PROCESS) -> None:
        if not secret:
            raise ValueError("agent secret is empty: set the backend's AGENT_AUTH_SECRET "
                             "(each agent holds only the token derived from it)")
        self.url_template = check_url_template(url_template)
        self._agent_in_host = "{agent}" in urlsplit(self.url_template).netloc
        # The template's host with the placeholder kept, to check the whole host a name makes.
        marked = urlsplit(self.url_template.replace("{agent}", _MARK)).hostname or ""
        self._host_template = marked.replace(_MARK, "{agent}")
        self._secret = secret
        self._redactor = redactor
        redactor.add(secret)
        self._wires: dict[str, _AgentWire] = {}
        self._timeout = timeout
        self._terminate_timeout = terminate_timeout
        self.parse_budget = parse_budget or ParseBudget()
        self._max_answer_bytes = max_answer_bytes
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), transport=transport, follow_redirects=False, cookies=_NoCookies(),
            headers={"Accept-Encoding": "identity"},  # bodies are counted as sent: no decompression
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        # GETs go straight to the poll transport, as a request head built once per agent: building
        # httpx's request and response models and running the client's redirect, auth and cookie
        # steps (none of which an agent call uses) cost about as much CPU as the exchange. The wire
        # bytes are the same as the client's (header_lines of its own build_request), and a client
        # given its transport sends every request there anyway (httpx ignores environment proxies then).
        self._direct = transport if isinstance(transport, PollTransport) else None

    async def aclose(self) -> None:
        await self._http.aclose()

    def base_url(self, agent: str) -> str:
        """The agent's base URL; raises InvalidIdentifier for names that do not fit safely."""
        if self._agent_in_host:
            name = check_agent_name(agent, in_host=True)
            check_host(self._host_template.replace("{agent}", name), name)
            return self.url_template.replace("{agent}", name)
        return self.url_template.replace("{agent}", path_segment(check_agent_name(agent)))

    def _wire(self, agent: str) -> _AgentWire:
        wire = self._wires.get(agent)
        if wire is None:
            base = self.base_url(agent)  # InvalidIdentifier for a name that does not fit: nothing is kept
            token = agent_token(self._secret, agent)
            self._redactor.add(token)  # before the agent is ever called: its texts may carry it
            request = self._http.build_request("GET", base, headers={TOKEN_HEADER: token})
            url = request.url
            if len(self._wires) >= MAX_KEPT_WIRES:
                self._wires.clear()  # names come from alerts and rows: never let them grow it without end
            wire = self._wires[agent] = _AgentWire(base, token, (url.host, url.port or 80),
                                                   url.raw_path.rstrip(b"/"), header_lines(request))
        return wire

    async def _send(self, method: str, wire: _AgentWire, path: str, timeout: float) -> Answer:
        """One request; its answer, to be used in ``async with`` (which lets it go). The poll
        transport's GETs carry no timeout of their own: every caller bounds the whole call."""
        if self._direct is not None and method == "GET":
            return await self._direct.get(wire.origin, b"".join(
                (b"GET ", wire.target_prefix, path.encode(), b" HTTP/1.1\r\n", wire.header_lines)))
        request = self._http.build_request(method, wire.base + path, headers={TOKEN_HEADER: wire.token},
                                           timeout=timeout)
        return _HttpxAnswer(await self._http.send(request, stream=True))

    def text(self, raw: str, limit: int) -> str:
        """An agent's text as it may be stored and sent: normalised, redacted, at most ``limit`` long."""
        return clean(self._redactor.text(clean(raw, limit + _SECRET_SLACK)), limit)

    async def _call(self, method: str, agent: str, path: str, timeout: float | None = None,
                    any_2xx: bool = False, shape: Callable[[dict[str, Any]], Any] | None = None,
                    ) -> tuple[AgentResult[Any], Any]:
        """One request; ``any_2xx`` accepts every 2xx, its body read as ``{}`` if it is not a JSON object.

        The body is read up to the client's cap and parsed within its budget; ``shape`` turns the
        JSON object into what the caller keeps while the budget is still held (so the parsed bulk
        is gone before the next parse starts); it may raise :class:`BadAgentResponse`.
        """
        wire = self._wire(agent)
        url = wire.base + path
        deadline = self._timeout if timeout is None else timeout
        cost = 0
        try:
            try:
                # httpx's timeouts bound each read; an agent trickling a byte at a time would never
                # trip them. The whole call, body and the wait for the parse budget included, gets
                # one overall deadline.
                async with asyncio.timeout(deadline), await self._send(method, wire, path, deadline) as answer:
                    status = answer.status_code
                    if status == 401:
                        return AgentResult("unauthorized", detail=f"{url} refused our token"), None
                    if status == 404:
                        return AgentResult("not_found", detail=f"{url}: 404"), None
                    if status >= 500:
                        text = self.text(await _error_text(answer), MAX_ERROR_BODY_CHARS)
                        return AgentResult("server_error", detail=f"{url}: {status} {text}"), None
                    if status != 200 and not (any_2xx and 200 <= status < 300):
                        return AgentResult("bad_response", detail=f"{url}: unexpected {status}"), None
                    body = await read_capped(answer, self._max_answer_bytes)
                    needed = parse_cost(body)
                    await self.parse_budget.reserve(needed)
                    cost = needed
            except BaseException:
                self.parse_budget.release(cost)  # reserved, then the deadline struck while closing
                raise
        except (AnswerTooLarge, ResponseTooLarge) as exc:
            return AgentResult("too_large", detail=f"agent answer too large: {url}: {exc}"), None
        except CompressedAnswer as exc:
            return AgentResult("bad_response", detail=f"{url}: {exc}"), None
        except TimeoutError:
            return AgentResult("timeout", detail=f"no complete answer within {deadline:g} s calling {url}"), None
        except httpx.TimeoutException as exc:
            return AgentResult("timeout", detail=f"{type(exc).__name__} calling {url}"), None
        except httpx.HTTPError as exc:
            return AgentResult("unreachable", detail=f"{type(exc).__name__} calling {url}: {exc}"), None
        try:
            try:
                parsed = decode_json(body)
            except (ValueError, RecursionError):  # RecursionError: hostile nesting depth
                if any_2xx:
                    return AgentResult("answered"), {}
                return AgentResult("bad_response", detail=f"{url}: body is not JSON we can read"), None
            return _shaped(url, parsed, any_2xx, shape)
        finally:
            self.parse_budget.release(cost)

    async def running(self, agent: str) -> AgentResult[RunningSnapshot]:
        result, snapshot = await self._call("GET", agent, "/api/executions/running", shape=_parse_running)
        return result if snapshot is None else AgentResult("answered", snapshot)

    async def status(self, agent: str, execution_id: str) -> AgentResult[ExecutionStatus]:
        result, body = await self._call("GET", agent, execution_path(execution_id, "status"))
        if body is None:
            return result
        running, code = body.get("running"), body.get("returncode")
        if not isinstance(running, bool) or not (code is None or _is_int(code)):
            return AgentResult("bad_response", detail=f"{agent}: malformed status for {execution_id}")
        return AgentResult("answered", ExecutionStatus(execution_id, running, code))

    async def terminate(self, agent: str, execution_id: str) -> AgentResult[TerminateOutcome]:
        # The agent waits up to 5 s grace + 2 s after SIGKILL before answering. As in Trinity, any
        # 2xx counts as done; only an explicit already_finished says the process had ended.
        result, body = await self._call("POST", agent, execution_path(execution_id, "terminate"),
                                        timeout=self._terminate_timeout, any_2xx=True)
        if body is None:
            return result
        code = body.get("returncode")
        status: Literal["terminated", "already_finished"] = (
            "already_finished" if body.get("status") == "already_finished" else "terminated")
        return AgentResult("answered", TerminateOutcome(status, code if _is_int(code) else None))

    async def result(self, agent: str, execution_id: str) -> AgentResult[RetainedResult | NoRetainedResult]:
        """The run's retained result (Trinity #2944).

        ``answered`` with a :class:`RetainedResult`, or with :class:`NoRetainedResult` for the coded
        404; ``not_found`` for a bare 404 (an older image without the route); any other kind means
        the agent could not be asked properly (retry, never fail). The body is read only up to
        ``MAX_BODY_BYTES``, as sent (a body with a content coding is refused, as for every call).
        """
        wire = self._wire(agent)
        path = execution_path(execution_id, "result")
        url = wire.base + path
        try:
            async with asyncio.timeout(self._timeout), await self._send("GET", wire, path, self._timeout) as answer:
                status = answer.status_code
                body = await read_capped(answer, MAX_BODY_BYTES)
        except (AnswerTooLarge, ResponseTooLarge):
            return AgentResult("bad_response", detail=f"{url}: body larger than {MAX_BODY_BYTES} bytes")
        except CompressedAnswer as exc:
            return AgentResult("bad_response", detail=f"{url}: {exc}")
        except TimeoutError:
            return AgentResult("timeout", detail=f"no complete answer within {self._timeout:g} s calling {url}")
        except httpx.TimeoutException as exc:
            return AgentResult("timeout", detail=f"{type(exc).__name__} calling {url}")
        except httpx.HTTPError as exc:
            return AgentResult("unreachable", detail=f"{type(exc).__name__} calling {url}: {exc}")
        if status == 404:
            if is_coded_missing(bytes(body)):
                return AgentResult("answered", NoRetainedResult())
            return AgentResult("not_found", detail=f"{url}: 404 without a code (an agent image without /result)")
        if status != 200:
            kind: ResultKind = ("unauthorized" if status == 401 else "server_error" if status >= 500
                                else "bad_response")
            return AgentResult(kind, detail=f"{url}: {status}")
        try:
            return AgentResult("answered", self._redacted(parse_retained(bytes(body))))
        except BadRetainedResult as exc:
            return AgentResult("bad_response", detail=f"{url}: {exc}")

    def _redacted(self, result: RetainedResult) -> RetainedResult:
        """The envelope's texts (already normalised by ``parse_retained``) without secrets."""
        def short(value: str | None) -> str | None:
            return None if value is None else self._redactor.text(value)

        def output(value: str | None) -> str | None:
            return None if value is None else self._redactor.known(value)

        return replace(result, error=short(result.error), error_code=short(result.error_code),
                       terminal_reason=short(result.terminal_reason), session_id=short(result.session_id),
                       response=output(result.response), execution_log=output(result.execution_log))

    async def last_error(self, agent: str, execution_id: str) -> AgentResult[LastError]:
        result, body = await self._call("GET", agent, execution_path(execution_id, "last-error"))
        if body is None:
            return result
        kind, message = body.get("error_type"), body.get("error_message")
        if not all(v is None or isinstance(v, str) for v in (kind, message)):
            return AgentResult("bad_response", detail=f"{agent}: malformed last-error")
        return AgentResult("answered", LastError(
            None if kind is None else self.text(kind, MAX_LAST_ERROR_TYPE_CHARS),
            None if message is None else self.text(message, MAX_LAST_ERROR_CHARS)))


class _NoCookies(CookieJar):
    """A jar that keeps nothing: no agent can plant a cookie that the client would send on (to it or
    to another agent), and parsing every answer's headers for cookies was 5 % of a scrape's CPU."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None


class _HttpxAnswer:
    """An ``httpx.Response`` (stream open, body unread) as an :class:`Answer`."""

    __slots__ = ("response", "status_code")

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.status_code = response.status_code

    def header(self, name: str) -> str:
        return str(self.response.headers.get(name, ""))

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            content = self.response.content
        except httpx.ResponseNotRead:
            async for chunk in self.response.aiter_raw():
                yield chunk
        else:
            yield content  # a transport (httpx.MockTransport, say) handed it over already read

    async def aclose(self) -> None:
        await self.response.aclose()

    async def __aenter__(self) -> _HttpxAnswer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _error_text(answer: Answer) -> str:
    """The start of an error body, read no further than needed."""
    head = bytearray()
    async for chunk in answer.chunks():
        head += chunk
        if len(head) >= _ERROR_TEXT_BYTES:
            break
    return bytes(head[:_ERROR_TEXT_BYTES]).decode("utf-8", "replace")[:200]


def _shaped(url: str, body: object, any_2xx: bool, shape: Callable[[dict[str, Any]], Any] | None,
            ) -> tuple[AgentResult[Any], Any]:
    if any_2xx and not isinstance(body, dict):
        return AgentResult("answered"), {}
    if not isinstance(body, dict):
        return AgentResult("bad_response", detail=f"{url}: body is not a JSON object"), None
    if shape is None:
        return AgentResult("answered"), body
    try:
        return AgentResult("answered"), shape(body)
    except BadAgentResponse as exc:
        return AgentResult("bad_response", detail=f"{url}: {exc}"), None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _id_set(body: dict[str, Any], key: str) -> frozenset[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadAgentResponse(f"{key} must be a list of strings")
    return frozenset(value)


def _parse_running(body: dict[str, Any]) -> RunningSnapshot:
    raw = body.get("executions")
    if not isinstance(raw, list):
        raise BadAgentResponse("'executions' must be a list")
    entries = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("execution_id"), str):
            raise BadAgentResponse("each execution needs a string execution_id")
        pid = item.get("pid")
        started = item.get("started_at")
        try:
            started_at = parse_utc(started) if started is not None else None
        except BadTimestamp:
            started_at = None  # informational only; presence is what matters
        meta = item.get("metadata")
        entries.append(RunningEntry(item["execution_id"], pid if _is_int(pid) else None, started_at,
                                    meta if isinstance(meta, dict) else {}))
    return RunningSnapshot(tuple(entries), _id_set(body, "recently_completed_ids"), _id_set(body, "pending_ids"),
                           reports_pending="pending_ids" in body)
