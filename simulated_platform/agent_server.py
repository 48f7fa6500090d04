"""Simulated Trinity agent servers: Trinity's agent API over real processes, many agents per port.

One process hosts many agents under a path prefix, so the agent URL template is
``http://127.0.0.1:{port}/agents/{agent}``; :func:`serve_agent` serves a single agent at the root
of its own port instead. Per agent:

    GET  /health                                 no token needed
    GET  /api/executions/running                 executions, recently_completed_ids, pending_ids
    GET  /api/executions/{id}/status             200 only while registered (running or just exited)
    POST /api/executions/{id}/terminate          SIGINT the group, grace, SIGKILL; a pending run
                                                 answers terminated (cancelled before start)
    GET  /api/executions/{id}/last-error
    GET  /api/executions/{id}/result             the retained terminal envelope + retained_at and
                                                 truncated_log; 404 {"detail":{"code":"no_retained_result"}}
                                                 when there is none; an old image: 404 {"detail":"Not Found"}
    POST /sim/executions   {execution_id, seconds, metadata?, ignore_sigint?, exit_code?, error_type?,
                            error_message?, synchronous? (default true: retained), response?, cost_usd?}
    POST /sim/restart      the agent restarts: processes killed, registry forgotten (retained results kept)
    POST /sim/fault        {"mode": "none" | "hang" | "garbage" | "down"}  (Trinity API and /health)
    POST /sim/legacy       {"enabled": bool, "result_route"?: bool}: an older image; enabled answers
                           /running with executions only, and result_route (default: not enabled)
                           says whether it has the /result route
    GET  /sim/state

Every path but ``/health`` needs ``X-Trinity-Agent-Token`` (the control API too). Routing by
prefix is one dict lookup, and auth and faults are applied before Starlette sees the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
import socket
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from typing import Any, Literal, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from exec_watchdog.platform_access.auth import TOKEN_HEADER, agent_token
from exec_watchdog.simulated_platform.process_registry import (
    DuplicateExecution,
    ExecutionNotFound,
    LastError,
    ProcessRegistry,
    RegistryConfig,
    RunResult,
    TerminateFailed,
)

# "gone": the agent's container was removed for good: its processes are killed, its registry is
# lost, and every request is answered as for an agent that does not exist (404 Not Found).
FaultMode = Literal["none", "hang", "garbage", "down", "gone"]
FAULT_MODES: tuple[FaultMode, ...] = ("none", "hang", "garbage", "down", "gone")
AGENT_NAME = re.compile(r"[A-Za-z0-9._-]{1,63}")
_TOKEN_HEADER = TOKEN_HEADER.lower().encode()
T = TypeVar("T")
_GARBAGE = b'{"executions": [{"execution_id": "'  # a 200 whose body is cut off mid-JSON


def valid_agent_name(name: str) -> bool:
    """Names the simulator accepts: [A-Za-z0-9._-]{1,63}, but never the path segments . and .."""
    return bool(AGENT_NAME.fullmatch(name)) and name not in (".", "..")


class SimulatedAgent:
    """One agent: its token, its process registry and the faults it is currently showing."""

    def __init__(self, name: str, secret: str, config: RegistryConfig | None = None,
                 legacy: bool = False, result_route: bool | None = None) -> None:
        if not valid_agent_name(name):
            raise ValueError(f"invalid agent name {name!r}: use 1-63 of [A-Za-z0-9._-]")
        self.name = name
        self.registry = ProcessRegistry(config)
        self.legacy = legacy  # answers /running as before Trinity #921 (executions only)
        self.result_route = not legacy if result_route is None else result_route  # Trinity #2944
        self.fault: FaultMode = "none"
        self._token = agent_token(secret, name).encode()
        self._unhang = asyncio.Event()

    def token_ok(self, scope: Scope) -> bool:
        for key, value in scope["headers"]:
            if key == _TOKEN_HEADER:
                return hmac.compare_digest(self._token, value)
        return False

    def set_fault(self, mode: FaultMode) -> None:
        if mode not in FAULT_MODES:
            raise ValueError(f"fault mode must be one of {', '.join(FAULT_MODES)}, got {mode!r}")
        if self.fault == "hang" and mode != "hang":
            self.release_hung()
        if mode == "gone":
            self.registry.wipe()
        self.fault = mode

    def release_hung(self) -> None:
        """Let requests held by the ``hang`` fault go (they answer 503)."""
        self._unhang.set()
        self._unhang = asyncio.Event()

    async def hang(self, receive: Receive) -> bool:
        """Hold a request until the client gives up (False) or the fault is lifted (True)."""
        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        released = asyncio.ensure_future(self._unhang.wait())
        gone = asyncio.ensure_future(disconnected())
        done, _ = await asyncio.wait((released, gone), return_when=asyncio.FIRST_COMPLETED)
        released.cancel()
        gone.cancel()
        return released in done


# -- Trinity's agent API and the simulator's control API ---------------------------------------

def _agent(request: Request) -> SimulatedAgent:
    agent: SimulatedAgent = request.scope["simulated_agent"]
    return agent


def _not_found() -> JSONResponse:
    return JSONResponse({"detail": "Execution not found"}, status_code=404)


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "healthy", "agent": _agent(request).name})


async def list_running(request: Request) -> JSONResponse:
    registry = _agent(request).registry
    body: dict[str, Any] = {"executions": [
        {"execution_id": e.execution_id, "pid": e.pid, "started_at": e.started_at, "metadata": e.metadata}
        for e in registry.running()
    ]}
    if not _agent(request).legacy:
        body["recently_completed_ids"] = registry.recently_completed_ids()
        body["pending_ids"] = registry.pending_ids()
    return JSONResponse(body)


async def execution_status(request: Request) -> JSONResponse:
    status = _agent(request).registry.status(request.path_params["execution_id"])
    # Like Trinity: only registered runs have a status; pending and completed ones are a 404.
    if status is None or status.state not in ("running", "exited"):
        return _not_found()
    return JSONResponse({"execution_id": status.execution_id, "running": status.state == "running",
                         "returncode": status.returncode, "started_at": status.started_at,
                         "metadata": status.metadata})


async def terminate(request: Request) -> JSONResponse:
    execution_id = request.path_params["execution_id"]
    try:
        result = await _agent(request).registry.terminate(execution_id)
    except ExecutionNotFound:
        return _not_found()
    except TerminateFailed as exc:
        return JSONResponse({"detail": str(exc)}, status_code=500)
    if result.status == "terminated":
        return JSONResponse({"status": "terminated", "execution_id": execution_id})
    return JSONResponse({"status": "already_finished", "execution_id": execution_id,
                         "returncode": result.returncode})


async def last_error(request: Request) -> JSONResponse:
    error = _agent(request).registry.last_error(request.path_params["execution_id"])
    if error is None:
        return _not_found()
    return JSONResponse({"error_type": error.error_type, "error_message": error.error_message})


async def retained_result(request: Request) -> JSONResponse:
    agent = _agent(request)
    if not agent.result_route:
        return JSONResponse({"detail": "Not Found"}, status_code=404)  # an image without the route
    record = agent.registry.retained(request.path_params["execution_id"])
    if record is None:
        return JSONResponse({"detail": {"code": "no_retained_result"}}, status_code=404)
    return JSONResponse(record.body())


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise HTTPException(400, "request body must be JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "request body must be a JSON object")
    return body


def _field(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    value = body.get(name, default)
    if value is ...:
        raise HTTPException(422, f"'{name}' is required")
    if value is not default and (not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)):
        raise HTTPException(422, f"'{name}' has the wrong type")
    return value


async def sim_start(request: Request) -> JSONResponse:
    body = await _json_object(request)
    execution_id = _field(body, "execution_id", str)
    error_type = _field(body, "error_type", str, None)
    error = LastError(error_type, _field(body, "error_message", str, None)) if error_type else None
    result = RunResult(_field(body, "synchronous", bool, True), _field(body, "response", str, None),
                       _field(body, "cost_usd", (int, float), 0.0))
    registry = _agent(request).registry
    try:
        await registry.start(execution_id, _field(body, "seconds", (int, float)),
                             _field(body, "metadata", dict, None), _field(body, "ignore_sigint", bool, False),
                             _field(body, "exit_code", int, 0), last_error=error, result=result)
    except DuplicateExecution as exc:
        raise HTTPException(409, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    status = registry.status(execution_id)
    return JSONResponse({"execution_id": execution_id, "state": status.state if status else None,
                         "pid": status.pid if status else None}, status_code=202)


async def sim_restart(request: Request) -> JSONResponse:
    _agent(request).registry.wipe()
    return JSONResponse({"status": "restarted"})


async def sim_fault(request: Request) -> JSONResponse:
    mode = _field(await _json_object(request), "mode", str)
    try:
        _agent(request).set_fault(mode)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return JSONResponse({"mode": mode})


async def sim_legacy(request: Request) -> JSONResponse:
    body, agent = await _json_object(request), _agent(request)
    enabled = _field(body, "enabled", bool)
    agent.legacy, agent.result_route = enabled, _field(body, "result_route", bool, not enabled)
    return JSONResponse({"legacy": agent.legacy, "result_route": agent.result_route})


async def sim_state(request: Request) -> JSONResponse:
    agent = _agent(request)
    return JSONResponse({"agent": agent.name, "fault": agent.fault, "legacy": agent.legacy,
                         "result_route": agent.result_route,
                         "running": len(agent.registry.running()), "pending": len(agent.registry.pending_ids()),
                         "recently_completed": len(agent.registry.recently_completed_ids())})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def _agent_api() -> Starlette:
    routes = [
        Route("/health", health),
        Route("/api/executions/running", list_running),
        Route("/api/executions/{execution_id}/status", execution_status),
        Route("/api/executions/{execution_id}/terminate", terminate, methods=["POST"]),
        Route("/api/executions/{execution_id}/last-error", last_error),
        Route("/api/executions/{execution_id}/result", retained_result),
        Route("/sim/executions", sim_start, methods=["POST"]),
        Route("/sim/restart", sim_restart, methods=["POST"]),
        Route("/sim/fault", sim_fault, methods=["POST"]),
        Route("/sim/legacy", sim_legacy, methods=["POST"]),
        Route("/sim/state", sim_state),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})


# -- the ASGI apps: auth, faults and routing to the agent ------------------------------------------

async def _send(send: Send, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _AgentsASGI:
    """Shared by both layouts: lifespan closes the registries; requests go through _handle."""

    def __init__(self, agents: Iterable[SimulatedAgent]) -> None:
        self.agents: dict[str, SimulatedAgent] = {}
        for agent in agents:
            if agent.name in self.agents:
                raise ValueError(f"agent {agent.name!r} is listed twice")
            self.agents[agent.name] = agent
        self._api = _agent_api()

    async def aclose(self) -> None:
        """Release hung requests and kill every agent's processes."""
        for agent in self.agents.values():
            agent.release_hung()
        await asyncio.gather(*(agent.registry.aclose() for agent in self.agents.values()))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _handle(self, agent: SimulatedAgent, prefix: str, scope: Scope, receive: Receive,
                      send: Send) -> None:
        route = scope["path"][len(prefix):]
        if not route.startswith("/sim/") and agent.fault != "none":
            if agent.fault == "garbage":
                return await _send(send, 200, _GARBAGE)
            if agent.fault == "gone":
                return await _send(send, 404, b'{"detail":"Not Found"}')
            if agent.fault == "hang" and not await agent.hang(receive):
                return None  # the client went away: nothing to answer
            return await _send(send, 503, b"Service Unavailable", b"text/plain")
        if route != "/health" and not agent.token_ok(scope):
            return await _send(send, 401, b'{"detail":"Unauthorized"}')
        child = dict(scope, simulated_agent=agent, root_path=scope.get("root_path", "") + prefix)
        await self._api(child, receive, send)
        return None


class MultiAgentApp(_AgentsASGI):
    """Many agents on one port, under ``/agents/{name}/...``; ``GET /health`` is the server's own."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return await send({"type": "websocket.close", "code": 1008})
        path: str = scope["path"]
        if path == "/health":
            return await _send(send, 200, json.dumps({"status": "healthy", "agents": len(self.agents)}).encode())
        name, slash, _ = path.removeprefix("/agents/").partition("/")
        agent = self.agents.get(name) if path.startswith("/agents/") and valid_agent_name(name) else None
        if agent is None or not slash:
            return await _send(send, 404, b'{"detail":"Not Found"}')
        return await self._handle(agent, f"/agents/{name}", scope, receive, send)


class SingleAgentApp(_AgentsASGI):
    """One agent at the root of its own port, as a real agent container serves it."""

    def __init__(self, agent: SimulatedAgent) -> None:
        super().__init__([agent])
        self.agent = agent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return await send({"type": "websocket.close", "code": 1008})
        return await self._handle(self.agent, "", scope, receive, send)


# -- serving --------------------------------------------------------------------------------------

class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield  # the host program owns SIGINT/SIGTERM, not this embedded server


class AgentServer:
    """A listening simulator; :meth:`stop` ends it and kills every simulated process."""

    def __init__(self, app: MultiAgentApp | SingleAgentApp, server: uvicorn.Server,
                 task: asyncio.Task[None], host: str, port: int) -> None:
        self.app, self._server, self._task = app, server, task
        self.host, self.port = host, port
        self.base_url = f"http://{host}:{port}"
        multi = isinstance(app, MultiAgentApp)
        self.url_template = f"{self.base_url}/agents/{{agent}}" if multi else self.base_url
        self.agents: Mapping[str, SimulatedAgent] = app.agents

    def agent_url(self, name: str) -> str:
        return self.url_template.format(agent=name)

    def registry(self, name: str) -> ProcessRegistry:
        return self.agents[name].registry

    async def stop(self) -> None:
        for agent in self.agents.values():
            agent.release_hung()
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.app.aclose()

    async def __aenter__(self) -> AgentServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def _serve(app: MultiAgentApp | SingleAgentApp, host: str, port: int) -> AgentServer:
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP, and
    # without it every response waits ~40 ms for a delayed ACK.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    config = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False, backlog=4096,
                            timeout_graceful_shutdown=2, server_header=False)
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            sock.close()
            task.result()  # raises what stopped it
            raise RuntimeError(f"the agent server on {host}:{port} stopped while starting")
        await asyncio.sleep(0.005)
    return AgentServer(app, server, task, host, int(sock.getsockname()[1]))


async def serve_agents(names: Iterable[str], secret: str, host: str = "127.0.0.1", port: int = 0,
                       config: RegistryConfig | None = None, legacy: Iterable[str] = (),
                       without_result_route: Iterable[str] = ()) -> AgentServer:
    """Serve many agents on one port (0 picks a free one) in this event loop; returns when listening.

    ``legacy`` names agents that answer ``/running`` like an older agent (``executions`` only) and
    lack the ``/result`` route; ``without_result_route`` names current agents on an image from
    before retained results (``/result`` is a bare 404).
    """
    old, no_result = set(legacy), set(without_result_route)
    agents = [SimulatedAgent(name, secret, config, legacy=name in old,
                             result_route=False if name in no_result else None) for name in names]
    return await _serve(MultiAgentApp(agents), host, port)


async def serve_agent(name: str, secret: str, host: str = "127.0.0.1", port: int = 0,
                      config: RegistryConfig | None = None, legacy: bool = False,
                      result_route: bool | None = None) -> AgentServer:
    """Serve one agent at the root of its own port (the URL template is just the base URL)."""
    return await _serve(SingleAgentApp(SimulatedAgent(name, secret, config, legacy, result_route)), host, port)


@contextlib.asynccontextmanager
async def running_agents(names: Iterable[str], secret: str, **options: Any) -> AsyncIterator[AgentServer]:
    """``async with running_agents([...], secret) as server:``: serve, then always stop."""
    server = await serve_agents(names, secret, **options)
    try:
        yield server
    finally:
        await server.stop()


class AgentServerThread:
    """:func:`serve_agents` on its own event loop in a background thread, for synchronous callers.

    Registries belong to that loop: reach them through :meth:`call`, for example
    ``thread.call(lambda: thread.server.registry("a").start("e1", 30))``.
    """

    def __init__(self, names: Iterable[str], secret: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="simulated-agents", daemon=True)
        self._thread.start()
        names = list(names)
        try:
            self.server = self.call(lambda: serve_agents(names, secret, **options))
        except BaseException:
            self._end_loop()
            raise
        self.url_template = self.server.url_template

    def call(self, factory: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30.0) -> T:
        """Run ``factory()`` on the server's loop and return its result."""
        async def run() -> T:
            return await factory()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def stop(self) -> None:
        try:
            self.call(self.server.stop)
        finally:
            self._end_loop()

    def _end_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> AgentServerThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
