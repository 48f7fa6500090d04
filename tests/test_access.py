"""Access: who may act or look, what the logs never show, and where an agent request may go.

- Every endpoint that acts or reveals refuses missing and wrong credentials: checked over real
  HTTP and WebSocket against ``python -m exec_watchdog remediator`` run as a subprocess, whose
  stderr is then searched for every secret it was given or derived.
- A label or a database row cannot steer a request outside the agent URL template: Hypothesis
  drives the real agent client against a recording server on loopback.
- Database rows with hostile agent names make neither the remediator nor the exporter call out.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
import websockets.exceptions
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from websockets.sync.client import connect as ws_connect

from exec_watchdog.exporter.gather import Gatherer
from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.agent_client import AgentClient
from exec_watchdog.platform_access.auth import agent_token
from exec_watchdog.platform_access.names import InvalidIdentifier, check_execution_id
from exec_watchdog.platform_access.slots import SqlSlots, slot_metadata
from exec_watchdog.remediator.app import Config, create_app
from exec_watchdog.remediator.auth import Credentials
from exec_watchdog.remediator.remediate import Settings
from exec_watchdog.simulated_platform.agent_server import AgentServerThread
from exec_watchdog.simulated_platform.process_registry import RegistryConfig
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.platform_rows import insert_agent, insert_execution
from exec_watchdog.testbed.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
HTTP_PROPERTY = settings(PROPERTY, max_examples=100)

_chars = st.characters() | st.characters(categories=["Cs"]) | st.characters(categories=["Cc"])
HOSTILE_NAMES = [
    "../admin", "..", ".", "a1/../a2", "a1/..", "%2e%2e", "..%2f", "a1%2fx", "a1\\..\\a2", "/etc/passwd",
    "a1@evil.example", "evil.example:80", "//evil.example", "http://evil.example", "a1:1@evil.example", "a1?x=1",
    "a1#frag", "a1 ", " a1", "a1\n", "a1\r\nX: y", "a1\x00", "a1\t", "", "\uff41\uff11", "a1\u200b", "\ud800",
    "'; DROP TABLE agent_ownership;--", "a" * 129, "[::1]", "127.0.0.1:22", "-a1", "_a1",
]
# Valid in a URL path, not in a host name: upper case, an empty label, a label over 63 characters.
PATH_ONLY_NAMES = ["A1", "Agent-7", "a..b", "a" * 64]
# What Trinity's sanitize_agent_name makes: lower case, digits, '_', '.', '-', a letter or digit first.
TRINITY_NAMES = ["gamma_ops", "a.b", "ops.v2", "x_", "a1.", "0x7f.1", "1.2.3.4", "a._-b"]
names = (st.sampled_from(HOSTILE_NAMES + PATH_ONLY_NAMES + TRINITY_NAMES) | st.text(_chars, max_size=70)
         | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", fullmatch=True)
         | st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,70}", fullmatch=True))
# Trinity's ids: the agent server's rule [A-Za-z0-9_-]{1,128}, any first character (token_urlsafe).
execution_ids = (st.sampled_from(["e1", "../../x", "e1/terminate", "e1?x=1", "e1#", "e1%2f..", "..", "e1\x00",
                                  "'; DROP TABLE schedule_executions;--", "e" * 129, "2026-01-01T00:00:00Z",
                                  "-", "_", "--x", "-Ab_9", "e1.x", "e1:x"])
                 | st.text(_chars, max_size=140) | st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True))


# -- credentials, as a function ---------------------------------------------------------------------

BEARER, USER, PASSWORD = "tok-" + "b" * 28, "am", "pw-" + "p" * 20
CREDENTIALS = Credentials(bearer_token=BEARER, basic_user=USER, basic_password=PASSWORD)


def _basic(user: str | bytes, password: str | bytes) -> str:
    raw = (user.encode() if isinstance(user, str) else user) + b":" + (
        password.encode() if isinstance(password, str) else password)
    return "Basic " + base64.b64encode(raw).decode()


headers_strategy = (
    st.text(st.characters(max_codepoint=255), max_size=80)
    | st.builds(lambda scheme, sep, value: scheme + sep + value,
                st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "basic", "Token", "Digest", ""]),
                st.sampled_from([" ", "  ", "", "\t"]),
                st.sampled_from([BEARER, BEARER[:-1], BEARER + "x", BEARER.upper(), "", PASSWORD])
                | st.text(st.characters(max_codepoint=255), max_size=60))
    | st.builds(_basic, st.sampled_from([USER, USER.upper(), "", "x"]) | st.text(max_size=10),
                st.sampled_from([PASSWORD, PASSWORD[:-1], "", BEARER]) | st.binary(max_size=10))
)


@PROPERTY
@given(header=headers_strategy)
@example(header="Basic \xe9")  # not ASCII: base64 refuses it with a plain ValueError
@example(header="Basic " + "\xff" * 8)
@example(header=_basic(USER, b"\xff\xfe"))  # not UTF-8 once decoded
def test_only_the_configured_credentials_are_accepted_and_nothing_raises(header: str) -> None:
    accepted = CREDENTIALS.accepts(header)
    scheme, _, value = header.partition(" ")
    if accepted:
        if scheme.lower() == "bearer":
            assert value.strip() == BEARER
        else:
            assert scheme.lower() == "basic"
            assert base64.b64decode(value.strip()) == f"{USER}:{PASSWORD}".encode()


def test_the_right_credentials_are_accepted_in_every_documented_form() -> None:
    for header in (f"Bearer {BEARER}", f"bearer {BEARER}", f"Bearer {BEARER} ", _basic(USER, PASSWORD)):
        assert CREDENTIALS.accepts(header), header
    assert CREDENTIALS.accepts(None, BEARER)


def _no_surrogates(text: str) -> bool:
    """What a query value can hold: Starlette's decoding replaces undecodable bytes, never leaves surrogates."""
    return not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


@PROPERTY
@given(token=st.text(st.characters() | st.characters(categories=["Cc"]), max_size=60).filter(_no_surrogates)
       | st.sampled_from([BEARER[:-1], BEARER + " ", " " + BEARER, PASSWORD]))
def test_a_websocket_query_token_must_equal_the_bearer_token(token: str) -> None:
    assert CREDENTIALS.accepts(None, token) == (token == BEARER)
    assert CREDENTIALS.accepts(f"Bearer {BEARER}", token) == (token == BEARER)  # a wrong query token wins


# -- the real remediator process --------------------------------------------------------------------

@dataclass
class Service:
    """``python -m exec_watchdog remediator`` with every credential kind and debug logging."""

    url: str
    engine: sa.Engine
    agents: AgentServerThread
    stderr: Path
    process: subprocess.Popen[bytes]
    bearer: str
    basic_user: str
    basic_password: str
    agent_secret: str
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/api/v1/events"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=20, trust_env=False)

    def right(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.bearer}"}

    def add_orphan(self, execution_id: str, agent: str = "a1") -> None:
        with self.engine.begin() as conn:
            insert_execution(conn, execution_id, agent, age_seconds=120)

    def status(self, execution_id: str) -> str:
        with self.engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT status FROM schedule_executions WHERE id = :id"),
                                    {"id": execution_id}).scalar_one())

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("access")
    # Random secrets, so finding one in the log can only mean it leaked.
    bearer, password, agent_secret = (secrets.token_urlsafe(24) for _ in range(3))
    for name, value in (("token", bearer), ("password", password), ("agent-secret", agent_secret)):
        (tmp / name).write_text(value + "\n")
    database_url = f"sqlite:///{tmp / 'trinity.db'}"
    engine = db.create_engine(database_url)
    db.create_platform_tables(engine, slot_metadata)
    agents = AgentServerThread(["a1", "a2"], agent_secret,
                               config=RegistryConfig(grace_seconds=0.5, kill_wait_seconds=1))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXEC_WATCHDOG_")}
    env["PYTHONPATH"] = str(ROOT)  # the code under test is this tree's
    stderr = tmp / "stderr.log"
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "exec_watchdog", "--log-level", "debug", "--log-format", "json", "remediator",
             "--listen", f"127.0.0.1:{port}", "--database-url", database_url,
             "--agent-url-template", agents.url_template, "--agent-secret-file", str(tmp / "agent-secret"),
             "--bearer-token-file", str(tmp / "token"), "--basic-auth-user", "alertmanager",
             "--basic-auth-password-file", str(tmp / "password"), "--protect-metrics",
             "--min-orphan-age", "60", "--breaker-max-actions", "1000", "--sweep-interval", "1"],
            cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=err)
    service = Service(f"http://127.0.0.1:{port}", engine, agents, stderr, process, bearer, "alertmanager", password,
                      agent_secret)
    service.secrets = {
        "bearer token": bearer, "basic auth password": password, "agent secret": agent_secret,
        "basic auth header value": _basic("alertmanager", password).removeprefix("Basic "),
        **{f"agent token of {a}": agent_token(agent_secret, a) for a in ("a1", "a2")},
    }
    try:
        wait_for_port(port, proc=process)
        yield service
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        agents.stop()
        engine.dispose()


WRONG: dict[str, dict[str, str] | str] = {
    "missing": {},
    "empty": {"Authorization": ""},
    "scheme only": {"Authorization": "Bearer"},
    "wrong bearer": {"Authorization": "Bearer not-the-token"},
    "bearer prefix": "bearer[:-1]",
    "bearer plus one": "bearer+x",
    "password as bearer": "password-as-bearer",
    "other scheme": "token-scheme",
    "basic wrong password": "basic-wrong-password",
    "basic wrong user": "basic-wrong-user",
    "basic token as password": "basic-token-as-password",
    "basic not base64": {"Authorization": "Basic !!!"},
    "basic not ascii": {"Authorization": "Basic \xe9\xe9"},  # sent as Latin-1 bytes
}


def _raw(headers: dict[str, str]) -> dict[bytes, bytes]:
    """Header bytes as they go on the wire (HTTP allows Latin-1 bytes in values)."""
    return {k.encode("latin-1"): v.encode("latin-1") for k, v in headers.items()}


def _wrong(service: Service, kind: str) -> dict[str, str]:
    spec = WRONG[kind]
    if isinstance(spec, dict):
        return spec
    return {"Authorization": {
        "bearer[:-1]": f"Bearer {service.bearer[:-1]}",
        "bearer+x": f"Bearer {service.bearer}x",
        "password-as-bearer": f"Bearer {service.basic_password}",
        "token-scheme": f"Token {service.bearer}",
        "basic-wrong-password": _basic(service.basic_user, service.basic_password + "x"),
        "basic-wrong-user": _basic("someone", service.basic_password),
        "basic-token-as-password": _basic(service.basic_user, service.bearer),
    }[spec]}


HTTP_ENDPOINTS = {
    "webhook": ("POST", "/api/v1/alerts"),
    "audit": ("GET", "/api/v1/audit"),
    "breaker reset": ("POST", "/api/v1/breaker/reset"),
    "metrics (protected)": ("GET", "/metrics"),
}


@pytest.mark.parametrize("kind", list(WRONG))
@pytest.mark.parametrize("endpoint", list(HTTP_ENDPOINTS))
def test_http_endpoints_that_act_or_reveal_refuse_missing_and_wrong_credentials(
        service: Service, endpoint: str, kind: str) -> None:
    method, path = HTTP_ENDPOINTS[endpoint]
    body = json.dumps(notification()).encode() if method == "POST" else None
    with service.client() as c:
        response = c.request(method, path, content=body, headers=_raw({
            "Content-Type": "application/json", **_wrong(service, kind)}))
    assert response.status_code == 401, response.text
    assert "decisions" not in response.text and "exec_watchdog_" not in response.text


@pytest.mark.parametrize("kind", [*WRONG, "wrong query token", "query token on header scheme"])
def test_the_event_feed_refuses_missing_and_wrong_credentials(service: Service, kind: str) -> None:
    url, headers = service.ws_url, {}
    if kind == "wrong query token":
        url += f"?access_token={service.bearer[:-1]}"
    elif kind == "query token on header scheme":
        url += f"?access_token=Bearer%20{service.bearer}"
    else:
        headers = _wrong(service, kind)
    refusals = (websockets.exceptions.InvalidStatus, websockets.exceptions.ConnectionClosed)
    with pytest.raises(refusals) as refused, ws_connect(url, additional_headers=headers, proxy=None,
                                                        open_timeout=10) as ws:
        ws.recv(timeout=5)  # a server that accepted would wait here, never close with 1008
    if isinstance(refused.value, websockets.exceptions.InvalidStatus):
        assert refused.value.response.status_code == 403
    else:
        assert isinstance(refused.value, websockets.exceptions.ConnectionClosed)
        assert refused.value.rcvd is not None and refused.value.rcvd.code == 1008


@pytest.mark.parametrize("form", ["bearer", "bearer lowercase scheme", "basic"])
def test_the_right_credentials_open_every_endpoint(service: Service, form: str) -> None:
    header = {"bearer": f"Bearer {service.bearer}", "bearer lowercase scheme": f"bearer {service.bearer}",
              "basic": _basic(service.basic_user, service.basic_password)}[form]
    auth = {"Authorization": header}
    with service.client() as c:
        assert c.post("/api/v1/alerts", json=notification(), headers=auth).status_code == 200
        assert c.get("/api/v1/audit", headers=auth).status_code == 200
        assert c.post("/api/v1/breaker/reset", headers=auth).json() == {"status": "ok", "breaker": "closed"}
        assert "exec_watchdog_remediator_requests_total" in c.get("/metrics", headers=auth).text
    with ws_connect(service.ws_url, additional_headers=auth, proxy=None, open_timeout=10) as ws, \
            pytest.raises(TimeoutError):
        ws.recv(timeout=0.2)  # open and quiet: nothing recovered meanwhile


def test_a_token_in_the_query_string_opens_only_the_event_feed(service: Service) -> None:
    with service.client() as c:
        for method, path in HTTP_ENDPOINTS.values():
            response = c.request(method, f"{path}?access_token={service.bearer}", content=b"{}",
                                 headers={"Content-Type": "application/json"})
            assert response.status_code == 401, path
    with ws_connect(f"{service.ws_url}?access_token={service.bearer}", proxy=None, open_timeout=10) as ws, \
            pytest.raises(TimeoutError):
        ws.recv(timeout=0.2)


def test_wrong_credentials_change_nothing_and_the_feed_reaches_only_authenticated_clients(service: Service) -> None:
    service.add_orphan("e-access-1")
    with ws_connect(service.ws_url, additional_headers=service.right(), proxy=None, open_timeout=10) as ws, \
            service.client() as c:
        for kind in WRONG:
            body = notification(alert("e-access-1", "a1"))
            headers = _raw({"Content-Type": "application/json", **_wrong(service, kind)})
            assert c.post("/api/v1/alerts", content=json.dumps(body), headers=headers).status_code == 401
        assert service.status("e-access-1") == "running"
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
        response = c.post("/api/v1/alerts", json=notification(alert("e-access-1", "a1")), headers=service.right())
        assert response.json()["alerts"][0]["outcome"] == "recovered", response.text
        event = json.loads(ws.recv(timeout=10))
        assert (event["type"], event["execution_id"]) == ("watchdog_recovery", "e-access-1")
    assert service.status("e-access-1") == "failed"


def test_secrets_never_appear_in_logs_or_responses(service: Service) -> None:
    """Right and wrong credentials on every endpoint, agent calls with HMAC tokens, then read stderr."""
    service.add_orphan("e-log-orphan", "a1")
    with service.engine.begin() as conn:
        insert_agent(conn, "a2", timeout_seconds=60)
        insert_execution(conn, "e-log-overdue", "a2", age_seconds=125)
    service.agents.call(lambda: service.agents.server.registry("a2").start("e-log-overdue", 600))
    seen: list[str] = []
    with service.client() as c:
        for kind in WRONG:
            for method, path in HTTP_ENDPOINTS.values():
                seen.append(c.request(method, path, content=b"{}", headers=_raw({
                    "Content-Type": "application/json", **_wrong(service, kind)})).text)
        body = notification(alert("e-log-orphan", "a1"), alert("e-log-overdue", "a2", "terminate_overdue"),
                            alert("e-log-missing", "a1"))
        response = c.post("/api/v1/alerts", json=body, headers=service.right())
        assert {a["outcome"] for a in response.json()["alerts"]} == {"recovered", "skipped"}, response.text
        seen.append(response.text)
        for auth in (service.right(), {"Authorization": _basic(service.basic_user, service.basic_password)}):
            for path in ("/api/v1/audit", "/metrics", "/", "/healthz", "/readyz"):
                seen.append(c.get(path, headers=auth).text)
    with pytest.raises(websockets.exceptions.InvalidStatus), \
            ws_connect(f"{service.ws_url}?access_token=wrong-{service.bearer}", proxy=None, open_timeout=10):
        pass
    with ws_connect(f"{service.ws_url}?access_token={service.bearer}", proxy=None, open_timeout=10):
        pass
    service.process.send_signal(signal.SIGTERM)  # flush and finish the log: shutdown lines included
    service.process.wait(15)
    log = service.log()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    events = {line.get("event") for line in lines}
    # The capture is real: it saw start-up, both recoveries and the debug output of the HTTP stack.
    assert {"remediator_started", "recovery"} <= events, sorted(map(str, events))
    assert any(line.get("level") == "debug" for line in lines)
    for what, secret in service.secrets.items():
        assert secret not in log, f"the {what} appears in the remediator's log"
        for text in seen:
            assert secret not in text, f"the {what} appears in a response"


# -- where an agent request may go --------------------------------------------------------------------

TEMPLATES = ["http://agent-{agent}:8000", "http://{agent}:8000", "https://{agent}.agents.example.internal", "http://127.0.0.1:9/agents/{agent}",
             "http://127.0.0.1:9/fleet/{agent}/v1"]


def _assert_inside(template: str, url: str, agent: str, tail: str) -> None:
    """``url`` is the template's scheme, port and path, with ``agent`` in its one place and ``tail`` after."""
    mark = "zzagentzz"
    sample = httpx.URL(template.replace("{agent}", mark))
    got = httpx.URL(url)
    assert (got.scheme, got.port, got.userinfo, got.query, got.fragment) == (sample.scheme, sample.port, b"", b"", "")
    path = urlsplit(template.replace("{agent}", mark)).path
    if mark in sample.host:
        host_prefix, host_suffix = sample.host.split(mark)
        assert got.host == f"{host_prefix}{agent}{host_suffix}"
        assert all(1 <= len(label) <= 63 for label in got.host.split(".")), got.host  # no empty label
        with pytest.raises(OSError):
            socket.inet_aton(got.host)  # never an address literal
        assert got.raw_path.decode() == path + tail
    else:
        assert got.host == sample.host
        assert "/" not in agent
        # Byte for byte: nothing was normalised away ("..") or re-encoded on the way.
        assert got.raw_path.decode() == path.replace(mark, agent) + tail


@pytest.fixture(scope="module")
def clients() -> Iterator[dict[str, AgentClient]]:
    made = {template: AgentClient(template, "secret") for template in TEMPLATES}
    yield made

    async def close() -> None:
        for client in made.values():
            await client.aclose()

    asyncio.run(close())


@PROPERTY
@given(template=st.sampled_from(TEMPLATES), agent=names, execution_id=execution_ids)
@example(template=TEMPLATES[2], agent="..", execution_id="e1")
@example(template=TEMPLATES[0], agent="a.evil.example", execution_id="e1")
@example(template="https://{agent}.agents.example.internal", agent="a..b", execution_id="-x")
def test_agent_urls_stay_inside_the_template(clients: dict[str, AgentClient], template: str, agent: str,
                                             execution_id: str) -> None:
    try:
        base = clients[template].base_url(agent)
        tail = f"/api/executions/{check_execution_id(execution_id)}/terminate"
    except InvalidIdentifier:
        return
    _assert_inside(template, base + tail, agent, tail)


class Recorder:
    """A real HTTP server on loopback that records each request and answers like an idle agent."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []
        lock = threading.Lock()
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms stall

            def _answer(self) -> None:
                with lock:
                    requests.append((self.command, self.path, self.headers.get("Host", "")))
                body = json.dumps({"executions": [], "recently_completed_ids": [], "pending_ids": [],
                                   "status": "terminated", "running": False, "returncode": 0,
                                   "error_type": None, "error_message": None}).encode()
                status = 200
                if self.path.endswith("/result"):  # nothing retained, as a current agent says it
                    status, body = 404, b'{"detail":{"code":"no_retained_result"}}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test reads self.requests

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="recorder", daemon=True)
        self.thread.start()

    @property
    def template(self) -> str:
        return f"http://127.0.0.1:{self.port}/agents/{{agent}}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


async def _call_every_endpoint(client: AgentClient, agent: str, execution_id: str) -> None:
    await client.running(agent)
    await client.status(agent, execution_id)
    await client.terminate(agent, execution_id)
    await client.last_error(agent, execution_id)
    await client.result(agent, execution_id)


@pytest.fixture
async def recorder_client(recorder: Recorder) -> AsyncIterator[AgentClient]:
    """One client for all examples of a property (building one costs more than its requests)."""
    client = AgentClient(recorder.template, "secret", timeout=5)
    yield client
    await client.aclose()


@HTTP_PROPERTY
@given(agent=names, execution_id=execution_ids)
@example(agent="..", execution_id="e1")
@example(agent="a1", execution_id="..")
async def test_agent_requests_reach_only_the_template_address(recorder: Recorder, recorder_client: AgentClient,
                                                              agent: str, execution_id: str) -> None:
    recorder.requests.clear()
    with contextlib.suppress(InvalidIdentifier):
        await _call_every_endpoint(recorder_client, agent, execution_id)
    for _method, path, host in recorder.requests:
        assert host == f"127.0.0.1:{recorder.port}"
        assert path.startswith(f"/agents/{agent}/api/executions/"), path
        assert path in (f"/agents/{agent}/api/executions/running",
                        f"/agents/{agent}/api/executions/{execution_id}/status",
                        f"/agents/{agent}/api/executions/{execution_id}/terminate",
                        f"/agents/{agent}/api/executions/{execution_id}/last-error",
                        f"/agents/{agent}/api/executions/{execution_id}/result"), path


@HTTP_PROPERTY
@given(agent=names, execution_id=execution_ids)
async def test_agent_requests_with_the_agent_in_the_host_stay_on_template_hosts(agent: str, execution_id: str) -> None:
    # agent-*.invalid host names cannot resolve here, so a transport records the requests the client
    # makes instead of a server receiving them (the one stand-in in this file).
    template = "http://agent-{agent}:8000"
    urls: list[httpx.URL] = []

    def record(request: httpx.Request) -> httpx.Response:
        urls.append(request.url)
        return httpx.Response(200, json={"executions": [], "status": "terminated"})

    client = AgentClient(template, "secret", transport=httpx.MockTransport(record))
    try:
        await _call_every_endpoint(client, agent, execution_id)
    except InvalidIdentifier:
        pass
    finally:
        await client.aclose()
    for url in urls:
        assert (url.scheme, url.host, url.port, url.userinfo, url.query) == ("http", f"agent-{agent}", 8000, b"", b"")
        assert url.raw_path.decode() in ("/api/executions/running", f"/api/executions/{execution_id}/status",
                                         f"/api/executions/{execution_id}/terminate",
                                         f"/api/executions/{execution_id}/last-error",
                                         f"/api/executions/{execution_id}/result")


# -- hostile agent names stored in the database -------------------------------------------------------

ROW_HOSTILE = ["../admin", "a1@evil.example", "evil.example:80", "a1/../a2", "a1?x=1", "a1#f", "a1 ", "a1\n",
               "%2e%2e", "..", "\uff41\uff11", "a" * 129, "'; DROP TABLE agent_ownership;--"]


@contextlib.asynccontextmanager
async def _remediator_app(database_url: str, template: str) -> AsyncIterator[httpx.AsyncClient]:
    """The real app (lifespan entered), capacity slots in the SQL table, a 500 kept as a response."""
    config = Config(database_url=database_url, agent_url_template=template, agent_secret="s3cret",
                    credentials=Credentials(bearer_token=BEARER), agent_timeout=2.0,
                    settings=Settings(replica="access-test"))
    app = create_app(config, CollectorRegistry())
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://remediator",
            headers={"Authorization": f"Bearer {BEARER}"}) as client:
        yield client


def _platform(database_url: str) -> sa.Engine:
    engine = db.create_engine(database_url)
    db.create_platform_tables(engine, slot_metadata)
    return engine


def _statuses(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {row[0]: row[1] for row in conn.execute(sa.text("SELECT id, status FROM schedule_executions"))}


async def test_hostile_agent_names_in_rows_make_the_remediator_call_nobody(database_url: str,
                                                                        recorder: Recorder) -> None:
    engine = _platform(database_url)
    with engine.begin() as conn:
        for i, name in enumerate(ROW_HOSTILE):
            insert_execution(conn, f"e-h{i}", name, age_seconds=120)
        insert_execution(conn, "e-ok", "ok1", age_seconds=120)
    before = _statuses(engine)
    recorder.requests.clear()
    async with _remediator_app(database_url, recorder.template) as client:
        # The label is safe but the row disagrees; then the label repeats the row's hostile name.
        safe = [alert(f"e-h{i}", "a1") for i in range(len(ROW_HOSTILE))]
        hostile = [alert(f"e-h{i}", name) for i, name in enumerate(ROW_HOSTILE)]
        for batch in (safe, hostile):
            response = await client.post("/api/v1/alerts", json=notification(*batch))
            assert response.status_code == 200, response.text
            assert {a["outcome"] for a in response.json()["alerts"]} <= {"skipped", "ignored"}
        assert recorder.requests == []
        assert _statuses(engine) == before
        # The control: a safe row is asked about at the template's address, and recovered.
        response = await client.post("/api/v1/alerts", json=notification(alert("e-ok", "ok1")))
        assert response.json()["alerts"][0]["outcome"] == "recovered", response.text
    host = f"127.0.0.1:{recorder.port}"
    assert recorder.requests == [("GET", "/agents/ok1/api/executions/running", host),
                                 ("GET", "/agents/ok1/api/executions/e-ok/result", host),
                                 ("GET", "/agents/ok1/api/executions/e-ok/last-error", host)]
    engine.dispose()


@pytest.mark.parametrize("name", PATH_ONLY_NAMES)
async def test_names_unsafe_in_a_host_are_ignored_by_a_host_template_not_a_server_error(
        sqlite_url: str, name: str) -> None:
    engine = _platform(sqlite_url)
    with engine.begin() as conn:
        insert_execution(conn, "e1", name, age_seconds=120)
        insert_execution(conn, "e2", name, age_seconds=7200)
    async with _remediator_app(sqlite_url, "http://agent-{agent}.invalid:8000") as client:
        response = await client.post("/api/v1/alerts", json=notification(
            alert("e1", name), alert("e2", name, "terminate_overdue")))
    assert response.status_code == 200, response.text
    assert {a["outcome"] for a in response.json()["alerts"]} == {"ignored"}
    assert _statuses(engine) == {"e1": "running", "e2": "running"}
    engine.dispose()


@pytest.mark.parametrize("where", ["path", "host"])
async def test_hostile_agent_names_in_rows_make_the_exporter_call_nobody(sqlite_url: str, recorder: Recorder,
                                                                         where: str) -> None:
    engine = _platform(sqlite_url)
    hostile = ROW_HOSTILE + (PATH_ONLY_NAMES if where == "host" else [])
    good = "ok1"
    with engine.begin() as conn:
        for i, name in enumerate(hostile):
            insert_execution(conn, f"e-h{i}", name, age_seconds=120)
            insert_agent(conn, f"{name}-owned" if name else "\x7f")
        insert_execution(conn, "e-ok", good, age_seconds=120)
    urls: list[httpx.URL] = []
    if where == "path":
        recorder.requests.clear()
        client = AgentClient(recorder.template, "s3cret")
    else:
        # agent-*.invalid cannot resolve here: a transport records what the client would request.
        def record(request: httpx.Request) -> httpx.Response:
            urls.append(request.url)
            return httpx.Response(200, json={"executions": []})

        client = AgentClient("http://agent-{agent}.invalid:8000", "s3cret", transport=httpx.MockTransport(record))
    try:
        snapshot = await Gatherer(engine, client, SqlSlots(engine)).gather()
    finally:
        await client.aclose()
        engine.dispose()
    assert [a.name for a in snapshot.agents] == [good]
    assert snapshot.invalid_rows == len(hostile)
    if where == "path":
        assert recorder.requests == [("GET", f"/agents/{good}/api/executions/running", f"127.0.0.1:{recorder.port}")]
    else:
        assert [str(u) for u in urls] == [f"http://agent-{good}.invalid:8000/api/executions/running"]
