"""The remediator's HTTP face: Starlette on uvicorn.

Status codes are a policy (Alertmanager reads them): 2xx handled or deliberately ignored; 400
malformed, 401 unauthenticated, 413 too large, 415 not JSON — never retried usefully; 503 when a
transient failure means Alertmanager should deliver again (re-processing is harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import sqlalchemy as sa
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from exec_watchdog.common import redaction
from exec_watchdog.common.contract import ACTION_OUTCOMES, ACTIONS, QUIET_OUTCOMES
from exec_watchdog.common.redaction import redact
from exec_watchdog.common.serving import lifespan, opened
from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.agent_client import AgentClient
from exec_watchdog.platform_access.inflight import open_inflight_store
from exec_watchdog.platform_access.names import InvalidIdentifier, check_execution_id
from exec_watchdog.platform_access.poll_transport import PollTransport
from exec_watchdog.platform_access.slots import open_slot_store, require_store_for
from exec_watchdog.platform_access.timestamps import format_utc, utcnow
from exec_watchdog.remediator import audit, console, story
from exec_watchdog.remediator.announce import Announcer, WebSocketHub
from exec_watchdog.remediator.auth import Credentials
from exec_watchdog.remediator.breaker import Breaker
from exec_watchdog.remediator.console import Console
from exec_watchdog.remediator.evidence import Delivery, DeliveryCounter, Recorder, Redactor
from exec_watchdog.remediator.metrics import RemediatorMetrics
from exec_watchdog.remediator.pause import AlertmanagerUnavailable, PauseInputError, Pauser, PauseRequest
from exec_watchdog.remediator.payload import Notification, PayloadError, parse_notification
from exec_watchdog.remediator.remediate import Remediator, Settings
from exec_watchdog.remediator.shadow_compare import Comparison
from exec_watchdog.remediator.silences import SilenceChecker

log = structlog.get_logger("exec_watchdog.remediator")
PAGE = Path(__file__).with_name("recoveries.html")
STATIC = Path(__file__).with_name("static")
STATIC_FILES = {"console.js": "text/javascript", "console.css": "text/css"}  # nothing else is served


@dataclass(frozen=True)
class Config:
    database_url: str
    agent_url_template: str
    agent_secret: str
    credentials: Credentials
    redis_url: str | None = None  # capacity slots in Redis (Trinity's layout); else the SQL table
    announce_redis_url: str | None = None  # PUBLISH recovery events here when set
    announce_channel: str = "trinity:watchdog"
    alertmanager_urls: tuple[str, ...] = ()  # re-check silences just before acting
    protect_metrics: bool = False
    max_body_bytes: int = 4 * 1024 * 1024
    body_deadline_seconds: float = 10.0  # a client trickling its body is dropped (408), not waited for
    stalled_after_seconds: float = 90.0  # readiness fails when a delivery runs this long (past every deadline)
    agent_timeout: float = 5.0
    agent_terminate_timeout: float = 15.0  # overall, body included: the agent takes up to 7 s to answer
    breaker_max_actions: int = 100
    breaker_window_seconds: float = 300.0
    sweep_interval_seconds: float = 5.0
    external_url: str = ""  # where people reach this remediator: links to stories in events and metrics
    record_evidence: bool = True  # keep the facts behind each decision with its audit row
    grafana_url: str = ""  # Grafana's base URL: the live page links to the dashboard when set
    settings: Settings = field(default_factory=lambda: Settings(replica=f"remediator-{uuid.uuid4().hex[:8]}"))


@dataclass(frozen=True, slots=True)
class State:
    """Resources the lifespan opens and closes; handlers reach them with ``opened(app, State)``."""

    remediator: Remediator
    engine: sa.Engine
    hub: WebSocketHub
    metrics: RemediatorMetrics
    config: Config
    recorder: Recorder
    console: Console


def create_app(config: Config, registry: CollectorRegistry | None = None) -> Starlette:
    metrics = RemediatorMetrics(registry or CollectorRegistry(), config.external_url)
    hub = WebSocketHub()
    breaker = Breaker(config.breaker_max_actions, config.breaker_window_seconds)

    @contextlib.asynccontextmanager
    async def open_state() -> AsyncIterator[State]:
        engine = db.create_engine(config.database_url)
        await anyio.to_thread.run_sync(audit.create_tables, engine)
        agents = AgentClient(config.agent_url_template, config.agent_secret, timeout=config.agent_timeout,
                             terminate_timeout=config.agent_terminate_timeout,
                             transport=PollTransport(max_connections=config.settings.agent_concurrency))
        http = httpx.AsyncClient(timeout=httpx.Timeout(3.0), follow_redirects=False)
        announce_redis = Redis.from_url(config.announce_redis_url, socket_timeout=3) if config.announce_redis_url \
            else None
        silences = SilenceChecker(list(config.alertmanager_urls), http) if config.alertmanager_urls else None
        await anyio.to_thread.run_sync(require_store_for, config.redis_url, engine)
        remediator = Remediator(engine, open_slot_store(config.redis_url, engine), agents,
                                Announcer(hub, announce_redis, config.announce_channel, config.external_url), breaker,
                                silences, metrics, _with_claim_lease(config),
                                inflight=open_inflight_store(config.redis_url, engine))
        # Every secret this process holds; the agent client adds each agent's derived token.
        redaction.PROCESS.add(config.agent_secret, config.credentials.bearer_token,
                              config.credentials.basic_password,
                              *(secret for url in (config.database_url, config.redis_url, config.announce_redis_url)
                                for secret in redaction.secrets_of_url(url)))
        recorder = Recorder(Redactor(base=redaction.PROCESS), DeliveryCounter(), config.record_evidence)
        sweeper = asyncio.create_task(_sweep(remediator, engine, metrics, config.sweep_interval_seconds))
        comparison = asyncio.create_task(Comparison(  # shadow mode: compare with the platform's cleanup
            engine, remediator.slots, metrics, config.settings.replica, config.settings.shadow_comparison).run()) \
            if config.settings.shadow else None
        log.info("remediator_started", replica=config.settings.replica, dry_run=config.settings.dry_run,
                 shadow=config.settings.shadow,
                 authenticated=config.credentials.configured, silence_check=bool(silences))
        try:
            console = Console(Pauser(config.alertmanager_urls, http), http, config.grafana_url)
            yield State(remediator, engine, hub, metrics, config, recorder, console)
        finally:
            for task in (sweeper, comparison):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await agents.aclose()
            await http.aclose()
            if announce_redis is not None:
                await announce_redis.aclose()
            engine.dispose()

    return Starlette(lifespan=lifespan(open_state), routes=[
        Route("/api/v1/alerts", webhook, methods=["POST"]),
        Route("/api/v1/audit", audit_api, methods=["GET"]),
        Route("/api/v1/executions/{execution_id}", execution_story, methods=["GET"]),
        Route("/api/v1/breaker/reset", reset_breaker, methods=["POST"]),
        Route("/api/v1/now", now_api, methods=["GET"]),
        Route("/api/v1/pause", pause_api, methods=["POST"]),
        Route("/api/v1/resume", resume_api, methods=["POST"]),
        Route("/static/{name}", static_file, methods=["GET"]),
        WebSocketRoute("/api/v1/events", events),
        Route("/", page, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ])


def _with_claim_lease(config: Config) -> Settings:
    """The action claim's lease never shorter than the terminate call it guards, plus a margin:
    a lapsed lease must mean its holder's terminate is over (remediator/action_claims.py)."""
    floor = config.agent_terminate_timeout + CLAIM_LEASE_MARGIN_SECONDS
    settings = config.settings
    return settings if settings.action_claim_ttl_seconds >= floor else \
        dataclasses.replace(settings, action_claim_ttl_seconds=floor)


CLAIM_LEASE_MARGIN_SECONDS = 2.0


async def _sweep(remediator: Remediator, engine: sa.Engine, metrics: RemediatorMetrics, interval: float) -> None:
    """Finish what a crash or an outage left half done, here or on a replica that died."""
    while True:
        try:
            await remediator.finish_unfinished()
            metrics.pending_finishes.set(await anyio.to_thread.run_sync(_count_unfinished, engine))
            metrics.breaker_open.set(1 if remediator.breaker.is_open else 0)
        except Exception as exc:  # keep sweeping through outages
            log.warning("sweep_failed", error=str(exc), error_type=type(exc).__name__)
        await asyncio.sleep(interval)


def _count_unfinished(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return audit.count_unfinished(conn)


def _state(connection: Request | WebSocket) -> State:
    return opened(connection.app, State)


def _problem(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"status": "error", "error": message}, status_code=status, headers=headers or None)


async def _read_body(request: Request, limit: int) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def webhook(request: Request) -> Response:
    state = _state(request)
    response = await _webhook(request, state)
    state.metrics.requests.labels(str(response.status_code)).inc()
    return response


def _delivery(request: Request, notification: Notification, received_at: datetime, recorder: Recorder) -> Delivery:
    """Who sent this notification: the Alertmanager named in the payload, the TCP peer, its user agent."""
    peer = f"{request.client.host}:{request.client.port}" if request.client else ""
    return Delivery(received_at=received_at, receiver=notification.receiver, external_url=notification.external_url,
                    group_key=notification.group_key, peer=peer, user_agent=request.headers.get("user-agent", ""),
                    alerts=len(notification.alerts), truncated_alerts=notification.truncated_alerts,
                    recorder=recorder)


async def _webhook(request: Request, state: State) -> Response:
    received_at = utcnow()
    if not state.config.credentials.accepts(request.headers.get("authorization")):
        return _problem(401, "missing or wrong credentials", **{"WWW-Authenticate": 'Bearer realm="exec-watchdog"'})
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        return _problem(415, f"content type must be application/json, got {media_type or 'none'!r}")
    try:
        async with asyncio.timeout(state.config.body_deadline_seconds):
            body = await _read_body(request, state.config.max_body_bytes)
    except TimeoutError:
        return _problem(408, f"body not received within {state.config.body_deadline_seconds:g} s")
    if body is None:
        return _problem(413, f"body larger than {state.config.max_body_bytes} bytes")
    try:
        notification = parse_notification(json.loads(body))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and PayloadError are ValueErrors
        what = str(exc) if isinstance(exc, PayloadError) else f"malformed JSON: {exc}"
        return _problem(400, what[:500])
    state.console.last_notification_at = received_at
    with structlog.contextvars.bound_contextvars(group_key=notification.group_key[:200]):
        try:
            with state.metrics.duration.labels("batch").time():
                result = await state.remediator.handle(
                    notification.alerts, _delivery(request, notification, received_at, state.recorder))
        except sa.exc.SQLAlchemyError as exc:
            return _problem(503, f"database unavailable: {type(exc).__name__}", **{"Retry-After": "5"})
    summary = [{"fingerprint": v.alert.fingerprint, "execution_id": v.alert.execution_id[:200],
                "outcome": v.outcome, "reason": redact(v.reason)} for v in result.verdicts[:100]]
    if result.retry:
        return JSONResponse({"status": "retry", "alerts": summary}, status_code=503, headers={"Retry-After": "5"})
    return JSONResponse({"status": "ok", "alerts": summary})


def _authorized(request: Request) -> bool:
    return _state(request).config.credentials.accepts(request.headers.get("authorization"))


async def audit_api(request: Request) -> Response:
    if not _authorized(request):
        return _problem(401, "missing or wrong credentials")
    params = request.query_params
    unknown = set(params) - {"agent", "execution_id", "limit", "action", "outcome", "search"}
    if unknown:
        return _problem(400, f"unknown query parameters: {', '.join(sorted(unknown))}")
    raw_limit = params.get("limit", "100")
    # Length first: int() of thousands of digits raises (and costs) before any range check.
    if not (raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 4) or not 1 <= int(raw_limit) <= 1000:
        return _problem(400, "limit must be a whole number from 1 to 1000")
    if any("\x00" in params.get(k, "") for k in ("agent", "execution_id", "search")):
        return _problem(400, "agent, execution_id and search must not contain NUL characters")
    if any(len(params.get(k, "")) > 200 for k in ("agent", "execution_id", "search")):
        return _problem(400, "agent, execution_id and search are at most 200 characters (the audit keeps no "
                             "longer ones)")
    action = params.get("action") or None
    if action is not None and action not in ACTIONS:
        return _problem(400, f"action must be one of {', '.join(ACTIONS)}")
    outcomes = tuple(o for o in params.get("outcome", "").split(",") if o)
    known_outcomes = (*ACTION_OUTCOMES, *QUIET_OUTCOMES)
    if any(o not in known_outcomes for o in outcomes):
        return _problem(400, f"outcome must be a comma-separated list of {', '.join(known_outcomes)}")
    state = _state(request)

    def query() -> list[dict[str, Any]]:
        with state.engine.connect() as conn:
            return audit.recent(conn, agent=params.get("agent"), execution_id=params.get("execution_id"),
                                limit=int(raw_limit), action=action, outcomes=outcomes,
                                id_prefix=params.get("search") or None)

    try:
        rows = await anyio.to_thread.run_sync(query)
    except sa.exc.SQLAlchemyError as exc:
        return await _database_problem(state, exc)
    return JSONResponse({"decisions": [{**r, "reason": redact(r["reason"])} for r in rows]})


async def _database_problem(state: State, exc: sa.exc.SQLAlchemyError) -> Response:
    """503 with what is wrong, never a traceback: the audit tables missing, or the database."""
    missing = await anyio.to_thread.run_sync(audit.missing_tables, state.engine)
    if missing:
        log.error("audit_tables_missing", tables=missing)
        return _problem(503, f"the remediator's tables are missing ({', '.join(missing)}): restart the remediator "
                             "to create them", **{"Retry-After": "30"})
    return _problem(503, f"database unavailable: {type(exc).__name__}", **{"Retry-After": "5"})


async def execution_story(request: Request) -> Response:
    """One execution's whole story in time order: notifications, decisions with evidence, the
    recovery and its announcement."""
    if not _authorized(request):
        return _problem(401, "missing or wrong credentials")
    try:
        execution_id = check_execution_id(request.path_params["execution_id"])
    except InvalidIdentifier as exc:
        return _problem(400, str(exc)[:300])
    state = _state(request)

    def query() -> dict[str, Any] | None:
        with state.engine.connect() as conn:
            return story.load(conn, execution_id, state.config.external_url, state.console.grafana_dashboard_url)

    try:
        found = await anyio.to_thread.run_sync(query)
    except sa.exc.SQLAlchemyError as exc:
        return await _database_problem(state, exc)
    if found is None:
        return _problem(404, f"nothing is known about execution {execution_id!r}")
    return JSONResponse(found)


async def reset_breaker(request: Request) -> Response:
    if not _authorized(request):
        return _problem(401, "missing or wrong credentials")
    state = _state(request)
    state.remediator.breaker.reset()
    state.metrics.breaker_open.set(0)
    log.warning("breaker_reset", by="operator")
    return JSONResponse({"status": "ok", "breaker": "closed"})


async def events(ws: WebSocket) -> None:
    state = _state(ws)
    if not state.config.credentials.accepts(ws.headers.get("authorization"), ws.query_params.get("access_token")):
        await ws.close(code=1008)  # policy violation: no or wrong credentials
        return
    await ws.accept()
    state.hub.add(ws)
    try:
        while True:
            await ws.receive_text()  # clients only listen; this notices disconnects
    except WebSocketDisconnect:
        pass
    finally:
        state.hub.remove(ws)


# The page loads nothing from elsewhere and may not be framed (clickjacking its breaker button); its
# script and styles are files of their own (GET /static/console.js, console.css), so no inline script
# or style runs (script-src and style-src 'self').
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def page(request: Request) -> Response:
    return FileResponse(PAGE, media_type="text/html", headers=PAGE_HEADERS)


async def static_file(request: Request) -> Response:
    """The page's script and styles: a fixed list of files (no path from the request reaches the disk)."""
    name = request.path_params["name"]
    if name not in STATIC_FILES:
        return _problem(404, "no such file")
    return FileResponse(STATIC / name, media_type=STATIC_FILES[name], headers=PAGE_HEADERS)


# -- the on-call console: the page's "Now" header, pause and resume -------------------------------


async def now_api(request: Request) -> Response:
    """Remediation state, firing alerts not yet acted on, counts, the last notification."""
    if not _authorized(request):
        return _problem(401, "missing or wrong credentials")
    state = _state(request)
    c, now = state.console, utcnow()
    problems = []
    try:
        pauses: list[dict[str, str]] | None = [p.as_json() for p in await c.pauser.pauses()]
    except AlertmanagerUnavailable as exc:
        pauses, problems = None, [f"silences: {exc}"]
    try:
        firing = await c.firing()
    except AlertmanagerUnavailable as exc:
        firing, problems = [], [*problems, f"alerts: {exc}"]

    def query() -> tuple[dict[str, Any], dict[str, dict[str, Any]], str | None]:
        with state.engine.connect() as conn:
            return (console.counts(conn, now), console.last_decisions(conn, [a["execution_id"] for a in firing]),
                    console.last_decided_at(conn))

    try:
        counts, decided, last_decided = await anyio.to_thread.run_sync(query)
    except sa.exc.OperationalError:
        return _problem(503, "database unavailable", **{"Retry-After": "5"})
    waiting = []
    for alert in firing:
        last = decided.get(alert["execution_id"])
        if last is None or not last["acted"]:
            waiting.append({**alert, "last_decision": last})
    settings = state.remediator.settings
    last_seen = c.last_notification_at
    return JSONResponse({
        "generated_at": format_utc(now), "replica": settings.replica,
        "remediation": console.remediation_state(pauses, state.remediator.breaker, settings.dry_run, settings.shadow),
        "firing_not_acted_on": waiting[:console.MAX_FIRING], "firing_not_acted_on_count": len(waiting),
        "firing_count": len(firing), "counts": counts,
        "last_notification_at": format_utc(last_seen) if last_seen else None, "last_decision_at": last_decided,
        "links": {"alertmanager": (c.pauser.urls or (None,))[0], "grafana": c.grafana_dashboard_url or None},
        "problems": problems,
    })


async def _json_body(request: Request) -> object:
    body = await _read_body(request, 16 * 1024)
    if body is None:
        raise PauseInputError("body larger than 16 KiB")
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise PauseInputError("content type must be application/json")
    try:
        return json.loads(body) if body else {}
    except ValueError as exc:
        raise PauseInputError(f"malformed JSON: {exc}") from None


async def pause_api(request: Request) -> Response:
    """Create a silence on every remediation: body ``{"author", "comment", "duration_minutes"}``."""
    if not _authorized(request):
        return _problem(401, "missing or wrong credentials")
    state = _state(request)
    try:
        pause_request = PauseRequest.parse(await _json_body(request))
        url, pause = await state.console.pauser.pause(pause_request)
    except PauseInputError as exc:
        return _problem(400, str(exc))
    except AlertmanagerUnavailable as exc:
        return _problem(503, str(exc)[:500], **{"Retry-After": "5"})
    log.warning("remediation_paused", silence=pause.silence_id, author=pause.created_by, comment=pause.comment,
                ends_at=pause.ends_at, alertmanager=url)
    return JSONResponse({"status": "ok", "paused": pause.as_json(), "alertmanager": url})


async def resume_api(request: Request) -> Response:
    """Expire the silences that pause remediation: body ``{"silence_id": ...}`` for one, ``{}`` for all."""
    if not _authorized(request):
        return _problem(401, "missing or wrong credentials")
    state = _state(request)
    try:
        body = await _json_body(request)
        if not isinstance(body, dict) or set(body) - {"silence_id"}:
            raise PauseInputError("the body must be {} or {\"silence_id\": \"...\"}")
        silence_id = body.get("silence_id")
        if silence_id is not None and (not isinstance(silence_id, str) or not 0 < len(silence_id) <= 64):
            raise PauseInputError("silence_id must be a silence id (a string of at most 64 characters)")
        expired = await state.console.pauser.resume(silence_id)
    except PauseInputError as exc:
        return _problem(400, str(exc))
    except AlertmanagerUnavailable as exc:
        return _problem(503, str(exc)[:500], **{"Retry-After": "5"})
    log.warning("remediation_resumed", expired=expired)
    return JSONResponse({"status": "ok", "expired": expired})


async def metrics_endpoint(request: Request) -> Response:
    state = _state(request)
    if state.config.protect_metrics and not _authorized(request):
        return _problem(401, "missing or wrong credentials")
    state.metrics.breaker_open.set(1 if state.remediator.breaker.is_open else 0)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = _state(request)

    def ping() -> list[str]:
        with state.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return audit.missing_tables(state.engine)

    progress = state.remediator.progress
    if progress.oldest_seconds() > state.config.stalled_after_seconds:
        return JSONResponse({"status": "unready", "stalled_deliveries": progress.in_flight,
                             "oldest_seconds": round(progress.oldest_seconds(), 1)}, status_code=503)
    try:
        with anyio.fail_after(3.0):
            missing = await anyio.to_thread.run_sync(ping, abandon_on_cancel=True)
    except TimeoutError:
        return JSONResponse({"status": "unready", "database": "no answer within 3 s"}, status_code=503)
    except sa.exc.SQLAlchemyError as exc:
        return JSONResponse({"status": "unready", "database": type(exc).__name__}, status_code=503)
    if missing:  # every delivery would fail to record its decisions
        return JSONResponse({"status": "unready", "database": "ok", "missing_tables": missing}, status_code=503)
    return JSONResponse({"status": "ready", "database": "ok"})
