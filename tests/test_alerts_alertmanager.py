"""The rendered Alertmanager configuration on a real Alertmanager (fast profile): delivery to the
remediator's webhook, inhibition, and pausing remediation with the runbook's one silence.

The webhook peer is a small real HTTP server that records what Alertmanager sends; the
remediator itself is tested elsewhere. That something is NOT sent is judged after Alertmanager's
debug log shows the groups concerned flushed again (see :class:`FlushLog`), not after a sleep.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exec_watchdog.alerts.alertmanager import OPERATOR_RECEIVER, PAUSE_REMEDIATION_MATCHER, REMEDIATOR_RECEIVER
from exec_watchdog.alerts.render import render_alertmanager_config, render_rules
from exec_watchdog.common import contract
from exec_watchdog.testbed.servers import free_port, wait_for_port
from exec_watchdog.testbed.waiting import eventually
from tests.test_alerts import RUNBOOK, require_tool

TOKEN = "s3cret-token"
RULE_LABELS = {r["alert"]: r["labels"] for g in yaml.safe_load(render_rules("fast"))["groups"] for r in g["rules"]
               if "alert" in r}


@dataclass
class Webhook:
    """Records each notification: (headers, body)."""

    url: str
    received: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for _, body in self.received]

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0) -> None:
        try:
            eventually(lambda: predicate(self.bodies()), timeout, "the webhook got what was expected", interval=0.05)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; it got {self.bodies()}") from None


# An aggregation group's flush, in Alertmanager's debug log; the group's labels are the last {...}.
_FLUSH = re.compile(r':\{(?P<labels>[^{}]*)\}" msg=flushing')
_LABEL = re.compile(r'(\w+)=\\"(.*?)\\"')


@dataclass
class FlushLog:
    """Alertmanager's log at debug level, read for the flushes of its aggregation groups.

    A group flushes at group_wait, then every group_interval, and its next flush starts only when
    the notification of the previous one has finished. So once a group has flushed twice more, a
    whole flush ran after that moment, anything it sent has been received, and a group_interval
    has passed: the proof that what the group would send has been decided.
    """

    path: Path

    def flushes(self, **labels: str) -> int:
        """How often the groups whose group labels include ``labels`` have flushed so far."""
        count = 0
        for match in _FLUSH.finditer(self.path.read_text(errors="replace")):
            grouped = dict(_LABEL.findall(match["labels"]))
            count += all(grouped.get(k) == v for k, v in labels.items())
        return count

    def wait_flushed(self, groups: list[dict[str, str]], times: int) -> None:
        """Wait until each group (given by some of its group labels) has flushed ``times`` more times."""
        before = [self.flushes(**g) for g in groups]
        eventually(lambda: all(self.flushes(**g) >= n + times for g, n in zip(groups, before, strict=True)), 20,
                   f"Alertmanager flushed each of {groups} {times} more times", interval=0.05)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    port = free_port()
    hook = Webhook(f"http://127.0.0.1:{port}/api/v1/alerts")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with hook.lock:
                hook.received.append((dict(self.headers), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield hook
    server.shutdown()
    server.server_close()


@pytest.fixture
def flush_log(tmp_path: Path) -> FlushLog:
    return FlushLog(tmp_path / "alertmanager.log")


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: Webhook, flush_log: FlushLog) -> Iterator[str]:
    """A real Alertmanager on loopback, running the fast profile's rendered configuration; its
    log (debug level, for its flushes) is ``flush_log``."""
    binary = require_tool("prometheus-alertmanager")
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    config = tmp_path / "alertmanager.yml"
    config.write_text(render_alertmanager_config(webhook.url, str(token), "fast"))
    port = free_port()
    with flush_log.path.open("wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=debug"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc=proc)
        url = f"http://127.0.0.1:{port}"
        _until(lambda: httpx.get(f"{url}/-/ready").status_code == 200, "Alertmanager never became ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _until(check: Callable[[], bool], message: str, timeout: float = 10.0) -> None:
    eventually(check, timeout, message, interval=0.05)


def alert(name: str, agent: str, execution_id: str | None = None, resolved: bool = False) -> dict[str, Any]:
    """An alert as Prometheus would send it, with the labels the rendered rule gives it."""
    labels = {"alertname": name, "agent": agent, **RULE_LABELS[name]}
    if execution_id is not None:
        labels |= {"execution_id": execution_id, "schedule_id": "sched-1"}
    sent: dict[str, Any] = {"labels": labels, "annotations": {"summary": "test"}}
    if resolved:
        sent["endsAt"] = datetime.now(UTC).isoformat()
    return sent


def post(url: str, *alerts: dict[str, Any]) -> None:
    httpx.post(f"{url}/api/v2/alerts", json=list(alerts)).raise_for_status()


def _key(a: dict[str, Any]) -> tuple[str, str, str]:
    return a["labels"]["alertname"], a["labels"]["agent"], a["labels"].get("execution_id", "")


def states(url: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Alertmanager's view of every alert: (alertname, agent, execution_id) -> status."""
    return {_key(a): a["status"] for a in httpx.get(f"{url}/api/v2/alerts").json()}


def receivers(url: str) -> dict[tuple[str, str, str], list[str]]:
    """Where Alertmanager routes every alert: (alertname, agent, execution_id) -> receiver names."""
    return {_key(a): sorted(r["name"] for r in a["receivers"]) for a in httpx.get(f"{url}/api/v2/alerts").json()}


def notified(bodies: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(a["labels"]["agent"], a["labels"]["execution_id"]) for b in bodies for a in b["alerts"]}


def test_each_execution_reaches_the_remediator_in_its_own_notification_with_the_bearer_token(
        alertmanager: str, webhook: Webhook, flush_log: FlushLog) -> None:
    post(alertmanager, alert(contract.ORPHANED, "agent-a", "exec-1"), alert(contract.ORPHANED, "agent-a", "exec-2"),
         alert(contract.OVERDUE, "agent-b", "exec-3"), alert(contract.STUCK, "agent-a", "exec-4"),
         alert(contract.AGENT_UNREACHABLE, "agent-c"))
    webhook.wait_for(lambda bodies: len(bodies) >= 3)
    # Only the remediation alerts are routed to the webhook; the others go to the operators.

    def all_routed() -> dict[tuple[str, str, str], list[str]]:
        found = receivers(alertmanager)
        return found if len(found) == 5 else {}

    routed = eventually(all_routed, 10, "Alertmanager holds all five alerts", interval=0.05)
    assert routed == {
        (contract.ORPHANED, "agent-a", "exec-1"): [REMEDIATOR_RECEIVER],
        (contract.ORPHANED, "agent-a", "exec-2"): [REMEDIATOR_RECEIVER],
        (contract.OVERDUE, "agent-b", "exec-3"): [REMEDIATOR_RECEIVER],
        (contract.STUCK, "agent-a", "exec-4"): [OPERATOR_RECEIVER],
        (contract.AGENT_UNREACHABLE, "agent-c", ""): [OPERATOR_RECEIVER],
    }
    # Each webhook group has finished its first flush: all it sent has arrived.
    flush_log.wait_flushed([{"agent": a, "execution_id": e}
                            for (_, a, e), names in routed.items() if REMEDIATOR_RECEIVER in names], 1)
    with webhook.lock:
        received = list(webhook.received)
    assert len(received) == 3
    for headers, body in received:
        assert headers["Authorization"] == f"Bearer {TOKEN}"
        assert body["receiver"] == "remediator" and body["version"] == "4"
        assert len(body["alerts"]) == 1
        labels = body["alerts"][0]["labels"]
        assert body["groupLabels"] == {k: labels[k] for k in ("alertname", "agent", "execution_id")}
    assert notified([b for _, b in received]) == {("agent-a", "exec-1"), ("agent-a", "exec-2"), ("agent-b", "exec-3")}


def test_the_remediator_hears_when_an_alert_resolves(alertmanager: str, webhook: Webhook) -> None:
    post(alertmanager, alert(contract.ORPHANED, "agent-a", "exec-1"))
    webhook.wait_for(lambda bodies: len(bodies) == 1)
    post(alertmanager, alert(contract.ORPHANED, "agent-a", "exec-1", resolved=True))
    webhook.wait_for(lambda bodies: any(b["alerts"][0]["status"] == "resolved" for b in bodies))


def test_an_unreachable_agent_inhibits_that_agents_remediation_alerts_only(
        alertmanager: str, webhook: Webhook, flush_log: FlushLog) -> None:
    post(alertmanager, alert(contract.AGENT_UNREACHABLE, "agent-a"))
    # The inhibitor learns of source alerts asynchronously: once a probe is suppressed, it knows.
    post(alertmanager, alert(contract.ORPHANED, "agent-a", "probe"))
    _until(lambda: states(alertmanager)[(contract.ORPHANED, "agent-a", "probe")]["state"] == "suppressed",
           "the unreachable agent never inhibited its orphan alert")
    post(alertmanager, alert(contract.ORPHANED, "agent-a", "exec-1"), alert(contract.OVERDUE, "agent-a", "exec-2"),
         alert(contract.ORPHANED, "agent-b", "exec-3"))
    webhook.wait_for(lambda bodies: ("agent-b", "exec-3") in notified(bodies))
    now = states(alertmanager)
    for execution in ("exec-1", "exec-2"):
        name = contract.ORPHANED if execution == "exec-1" else contract.OVERDUE
        assert now[(name, "agent-a", execution)]["state"] == "suppressed"
        assert now[(name, "agent-a", execution)]["inhibitedBy"]
    assert now[(contract.ORPHANED, "agent-b", "exec-3")]["state"] == "active"
    # A group_interval and more, flushing agent-a's groups: their alerts must still not have been sent.
    flush_log.wait_flushed([{"agent": "agent-a", "execution_id": e} for e in ("exec-1", "exec-2")], 2)
    assert notified(webhook.bodies()) - {("agent-a", "probe")} == {("agent-b", "exec-3")}


def test_an_orphaned_or_overdue_execution_inhibits_its_own_stuck_warning(alertmanager: str) -> None:
    post(alertmanager, alert(contract.ORPHANED, "agent-a", "exec-1"), alert(contract.OVERDUE, "agent-a", "exec-2"),
         *(alert(contract.STUCK, "agent-a", e) for e in ("exec-1", "exec-2", "exec-3")))

    def suppressed() -> set[str]:
        return {e for (name, _, e), status in states(alertmanager).items()
                if name == contract.STUCK and status["state"] == "suppressed"}

    _until(lambda: suppressed() == {"exec-1", "exec-2"}, "the stuck warnings were never inhibited")
    assert states(alertmanager)[(contract.STUCK, "agent-a", "exec-3")]["state"] == "active"


def test_an_open_breaker_inhibits_the_remediator_failing_page_of_the_same_remediator(alertmanager: str) -> None:
    def remediator_alert(name: str, instance: str) -> dict[str, Any]:
        labels = {"alertname": name, "job": "exec-watchdog-remediator", "instance": instance, **RULE_LABELS[name]}
        return {"labels": labels, "annotations": {"summary": "test"}}

    post(alertmanager, remediator_alert(contract.BREAKER_OPEN, "remediator-1:9464"),
         remediator_alert(contract.REMEDIATOR_FAILING, "remediator-1:9464"),
         remediator_alert(contract.REMEDIATOR_FAILING, "remediator-2:9464"))

    def failing() -> dict[str, str]:
        found = httpx.get(f"{alertmanager}/api/v2/alerts").json()
        return {a["labels"]["instance"]: a["status"]["state"] for a in found
                if a["labels"]["alertname"] == contract.REMEDIATOR_FAILING}

    _until(lambda: failing() == {"remediator-1:9464": "suppressed", "remediator-2:9464": "active"},
           "the open breaker never inhibited its remediator's failing alert (only its own)")


def test_the_runbooks_one_silence_pauses_every_remediation_and_nothing_else(
        alertmanager: str, webhook: Webhook, flush_log: FlushLog) -> None:
    assert f"silence add '{PAUSE_REMEDIATION_MATCHER}'" in RUNBOOK.read_text()
    amtool = require_tool("amtool")
    added = subprocess.run(
        [amtool, f"--alertmanager.url={alertmanager}", "silence", "add", PAUSE_REMEDIATION_MATCHER,
         "--duration=1h", "--comment=Pausing exec-watchdog remediation: test"],
        capture_output=True, text=True, timeout=30, check=True)
    silence_id = added.stdout.strip()
    post(alertmanager, alert(contract.ORPHANED, "agent-a", "exec-1"), alert(contract.OVERDUE, "agent-b", "exec-2"),
         alert(contract.STUCK, "agent-a", "exec-3"), alert(contract.AGENT_UNREACHABLE, "agent-c"))
    _until(lambda: len(states(alertmanager)) == 4, "alerts never arrived")
    now = states(alertmanager)
    assert now[(contract.ORPHANED, "agent-a", "exec-1")]["silencedBy"] == [silence_id]
    assert now[(contract.OVERDUE, "agent-b", "exec-2")]["silencedBy"] == [silence_id]
    assert now[(contract.STUCK, "agent-a", "exec-3")]["state"] == "active"
    assert now[(contract.AGENT_UNREACHABLE, "agent-c", "")]["state"] == "active"
    # A group_interval and more, flushing the silenced groups: nothing may have been sent.
    flush_log.wait_flushed([{"agent": "agent-a", "execution_id": "exec-1"},
                            {"agent": "agent-b", "execution_id": "exec-2"}], 2)
    assert webhook.bodies() == []

    subprocess.run([amtool, f"--alertmanager.url={alertmanager}", "silence", "expire", silence_id],
                   capture_output=True, timeout=30, check=True)
    webhook.wait_for(lambda bodies: notified(bodies) == {("agent-a", "exec-1"), ("agent-b", "exec-2")})


def test_an_unreachable_agent_does_not_hold_its_unreachable_slot_reclaim_or_a_leak_release(
        alertmanager: str, webhook: Webhook) -> None:
    """The #497 reclaim's premise is an unreachable agent, and a leak release asks no agent: neither is inhibited."""
    post(alertmanager, alert(contract.AGENT_UNREACHABLE, "agent-a"))
    post(alertmanager, alert(contract.SLOT_EXPIRED, "agent-a", "probe"))
    _until(lambda: states(alertmanager)[(contract.SLOT_EXPIRED, "agent-a", "probe")]["state"] == "suppressed",
           "the unreachable agent never inhibited its plain slot-expiry alert")
    post(alertmanager, alert(contract.SLOT_EXPIRED_AGENT_UNREACHABLE, "agent-a", "slot-1"),
         alert(contract.SLOT_LEAKED, "agent-a", "slot-2"))
    webhook.wait_for(lambda bodies: {("agent-a", "slot-1"), ("agent-a", "slot-2")} <= notified(bodies))
    now = states(alertmanager)
    assert now[(contract.SLOT_EXPIRED_AGENT_UNREACHABLE, "agent-a", "slot-1")]["state"] == "active"
    assert now[(contract.SLOT_LEAKED, "agent-a", "slot-2")]["state"] == "active"
