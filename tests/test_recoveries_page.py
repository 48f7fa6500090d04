"""The live recoveries page (``GET /`` of the remediator) in a real headless Chromium.

Debian's ``chromium`` is driven by Playwright (never ``playwright install``: the browser is the
system one). Two kinds of server are behind the page:

- the remediator app in process on uvicorn, where the test itself broadcasts the announcement, for
  the cases the pipeline cannot stage on demand (the event arriving before its audit row, bad
  tokens);
- the whole running pipeline (fast profile), where a real orphan is recovered while the page is
  open and must appear on it without a reload, and a recovered row expands to its evidence.

A screenshot of the live page is saved to ``artifacts/recoveries-page.png`` and under the test's
``tmp_path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlalchemy as sa
import uvicorn
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright
from starlette.applications import Starlette

from exec_watchdog.common.serving import opened
from exec_watchdog.grafana.queries import labelled_queries
from exec_watchdog.platform_access.timestamps import format_utc, parse_utc, utcnow
from exec_watchdog.remediator import audit, texts
from exec_watchdog.remediator.app import Config, State, create_app
from exec_watchdog.remediator.auth import Credentials
from exec_watchdog.remediator.remediate import Settings
from exec_watchdog.testbed.servers import free_port, wait_for_port
from exec_watchdog.testbed.waiting import eventually, holds
from tests.pipeline_harness import Pipeline, running_pipeline

pytestmark = pytest.mark.timeout(240)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
TOKEN = "page-test-token"
DETECTED = re.compile(r"(\d+\.\d) s")  # "detected after", under a minute
EARLIER, LIVE = "agent-001", "agent-002"
SLACK = 20.0  # a loaded 2-core machine on top of the fast profile's floor

# Each row's cells by their data-field attribute, or null when no row shows that execution.
ROW_JS = """id => {
  const tr = [...document.querySelectorAll('#rows tr')].find(r => r.dataset.executionId === id);
  return tr ? Object.fromEntries([...tr.cells].map(td => [td.dataset.field, td.textContent])) : null;
}"""


# -- the browser --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """One Chromium for the module, on a fresh profile; afterwards no process of it may be left."""
    executable = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    if executable is None:  # CI installs it; a skip here would hide the page's only test
        pytest.fail(f"no chromium at {CHROMIUM} or on PATH: install chromium: make system-deps")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=executable, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 700})
        try:
            yield context
        finally:
            context.close()
    leftovers = [p for p in psutil.process_iter(["pid", "cmdline"])
                 if str(profile) in " ".join(p.info["cmdline"] or [])]
    for process in leftovers:
        with contextlib.suppress(psutil.Error):
            process.kill()
    assert not leftovers, f"chromium processes outlived the browser: {[p.pid for p in leftovers]}"


@dataclass
class Tab:
    page: Page
    navigations: list[str]
    errors: list[str]

    def status(self) -> str:
        return str(self.page.text_content("#status") or "")

    def row(self, execution_id: str) -> dict[str, str] | None:
        found: dict[str, str] | None = self.page.evaluate(ROW_JS, execution_id)
        return found

    def complete_row(self, execution_id: str) -> dict[str, str] | None:
        row = self.row(execution_id)
        return row if row and row["detected"] else None

    def row_ids(self) -> list[str]:
        ids: list[str] = self.page.eval_on_selector_all("#rows tr", "rows => rows.map(r => r.dataset.executionId)")
        return ids

    def wait_live(self) -> None:
        # A locator assertion, not wait_for_function: the page's Content-Security-Policy forbids the
        # eval that a string predicate needs, as it should.
        expect(self.page.locator("#status")).to_have_text("live", timeout=15_000)


@pytest.fixture
def tab(browser: BrowserContext) -> Iterator[Tab]:
    """A fresh page that records its main-frame navigations and its script errors."""
    page = browser.new_page()
    result = Tab(page, [], [])
    page.on("framenavigated", lambda frame: result.navigations.append(frame.url) if frame == page.main_frame else None)
    page.on("pageerror", lambda error: result.errors.append(str(error)))
    try:
        yield result
    finally:
        page.close()
    assert not result.errors, f"the page's script failed: {result.errors}"


def save_screenshot(page: Page, tmp_path: Path, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    png = page.screenshot(full_page=True)
    (ARTIFACTS / name).write_bytes(png)
    (tmp_path / name).write_bytes(png)


def seconds_between(earlier: str, later: str) -> float:
    return (parse_utc(later) - parse_utc(earlier)).total_seconds()


# -- the remediator in process ------------------------------------------------------------------


@dataclass(frozen=True)
class Recovered:
    """One recovery as the remediator records it, written straight into its tables by the test."""

    execution_id: str
    agent: str
    detected_after_seconds: float  # from the moment the run was lost to its recovery
    recovered_at: datetime = field(default_factory=utcnow)

    @property
    def reason(self) -> str:
        return texts.orphan_text(self.agent, reports_pending=True, no_retained_result=True)

    def event(self) -> dict[str, Any]:
        """The announcement, in the shape Trinity's UI understands."""
        return {"type": "watchdog_recovery", "agent_name": self.agent, "execution_id": self.execution_id,
                "action": "orphan_recovered", "reason": self.reason, "timestamp": format_utc(self.recovered_at)}


@dataclass
class LocalRemediator:
    """The real remediator app on uvicorn in a thread, its announcements driven by the test."""

    url: str
    app: Starlette
    engine: sa.Engine
    loop: asyncio.AbstractEventLoop

    def clients(self) -> int:
        size: int = opened(self.app, State).hub.size
        return size

    def announce(self, recovery: Recovered) -> None:
        text = json.dumps(recovery.event())
        asyncio.run_coroutine_threadsafe(opened(self.app, State).hub.broadcast(text), self.loop).result(5)

    def write_audit(self, r: Recovered) -> None:
        """What the remediator keeps of a finished recovery: its outbox row and its decision."""
        now = format_utc(r.recovered_at)
        with self.engine.begin() as conn:
            conn.execute(sa.insert(audit.recoveries).values(
                execution_id=r.execution_id, agent_name=r.agent, action="fail_orphan", reason=r.reason,
                fingerprint="fp-" + r.execution_id, runtime_seconds=12.0, recovered_at=now,
                alert_started_at=format_utc(r.recovered_at - timedelta(seconds=1)),
                detected_at=format_utc(r.recovered_at - timedelta(seconds=r.detected_after_seconds)),
                slot_released_at=now, announced_at=now, claimed_by="page-test", claim_expires_at=now))
            conn.execute(sa.insert(audit.decisions).values(
                decided_at=now, replica="page-test", alertname="ExecWatchdogExecutionOrphaned",
                alert_status="firing", fingerprint="fp-" + r.execution_id, remediation="fail_orphan",
                agent_name=r.agent, execution_id=r.execution_id, outcome="recovered", reason=r.reason))


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalRemediator]:
    database_url = f"sqlite:///{tmp_path / 'trinity.db'}"
    app = create_app(Config(database_url=database_url, agent_url_template="http://127.0.0.1:9/agents/{agent}",
                            agent_secret="unused", credentials=Credentials(bearer_token=TOKEN),
                            settings=Settings(replica="page-test")))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), name="remediator", daemon=True)
    thread.start()
    engine = sa.create_engine(database_url)
    try:
        wait_for_port(port)
        yield LocalRemediator(f"http://127.0.0.1:{port}", app, engine, loop)
    finally:
        server.should_exit = True
        thread.join(10)
        loop.close()
        engine.dispose()


def test_event_that_arrives_before_its_audit_row_still_shows_the_recovery(local: LocalRemediator, tab: Tab) -> None:
    """The remediator announces a recovery just before it writes the decision to the audit trail;
    the page asks again until the row is there, and shows it with its detected-after time."""
    tab.page.goto(f"{local.url}/#token={TOKEN}")
    tab.wait_live()
    eventually(local.clients, 5, "the page's WebSocket reached the hub")
    early = Recovered("exec-early-event", "agent-7", 9.4)

    local.announce(early)
    holds(lambda: tab.row(early.execution_id) is None, 1.0, "no row before the audit has one")
    local.write_audit(early)

    row = eventually(lambda: tab.row(early.execution_id), 15, "the recovery shows once its audit row exists")
    assert row is not None
    assert row["agent"] == "agent-7"
    assert row["action"] == "orphan failed"
    assert row["outcome"] == "recovered"
    assert row["detected"] == "9.4 s"
    assert row["reason"] == texts.orphan_text("agent-7", reports_pending=True, no_retained_result=True)
    assert len(tab.navigations) == 1, tab.navigations


def _directives(csp: str) -> dict[str, list[str]]:
    parts = (d.split() for d in csp.split(";") if d.strip())
    return {d[0]: d[1:] for d in parts}


def test_page_csp_forbids_inline_script_and_the_page_runs_its_script_from_its_own_file(
        local: LocalRemediator, tab: Tab) -> None:
    """script-src is 'self' only: the page's script is served at /static/console.js, the page goes live with
    it, and a script written inline into the page does not run."""
    response = tab.page.goto(f"{local.url}/#token={TOKEN}")
    assert response is not None
    script_src = _directives(response.headers["content-security-policy"])["script-src"]
    assert script_src == ["'self'"]
    tab.wait_live()
    script = tab.page.request.get(f"{local.url}/static/console.js")
    assert script.status == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["x-content-type-options"] == "nosniff"
    assert "new WebSocket(" in script.text()
    ran = tab.page.evaluate("""() => {
      const s = document.createElement("script");
      s.textContent = "window.inlineRan = true";
      document.head.appendChild(s);
      return window.inlineRan === true;
    }""")
    assert ran is False


def test_page_with_a_wrong_token_says_so_and_does_not_go_live(local: LocalRemediator, tab: Tab) -> None:
    tab.page.goto(f"{local.url}/#token=not-the-token")

    expect(tab.page.locator("#status")).to_contain_text("401", timeout=10_000)
    assert "check the token" in tab.status()
    holds(lambda: "401" in tab.status() and local.clients() == 0, 2.5, "the error stays and nothing connects")


def test_page_without_a_token_explains_how_to_open_it(local: LocalRemediator, tab: Tab) -> None:
    tab.page.goto(f"{local.url}/")

    eventually(lambda: "no token" in tab.status(), 5, "the page explains the missing token")
    assert "#token=" in tab.status()


# -- the running pipeline -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    workdir = tmp_path_factory.mktemp("page-pipeline")
    with running_pipeline(workdir / "stack", f"sqlite:///{workdir / 'trinity.db'}", agents=2) as p:
        yield p


def recover_orphan(p: Pipeline, agent: str) -> str:
    """Start a run whose completion report is lost; return its id once it is recovered."""
    started = p.start(agent, 0.5, "lose_report")
    floor = p.timing.orphan_floor(0.5, p.completed_window)
    eventually(lambda: any(d["outcome"] == "recovered" for d in p.decisions(started.execution_id)), floor + SLACK,
               f"the orphan {started.execution_id} on {agent} is recovered")
    return started.execution_id


@pytest.fixture(scope="module")
def earlier(pipeline: Pipeline) -> str:
    """An orphan recovered before any page is opened."""
    return recover_orphan(pipeline, EARLIER)


def assert_orphan_row(p: Pipeline, row: dict[str, str] | None, execution_id: str, agent: str) -> None:
    assert row is not None, f"no row for {execution_id}"
    assert row["agent"] == agent
    assert row["execution"] == execution_id
    assert row["action"] == "orphan failed"
    assert row["outcome"] == "recovered"
    expected = texts.orphan_text(agent, reports_pending=True, no_retained_result=True)
    assert row["reason"] == expected == p.row(execution_id).error
    shown = DETECTED.fullmatch(row["detected"])
    assert shown, row
    stored = p.recovery(execution_id)
    assert float(shown.group(1)) == pytest.approx(seconds_between(stored.detected_at, stored.recovered_at),
                                                  abs=0.051)  # one decimal


def test_page_lists_a_recovery_made_before_it_was_opened(pipeline: Pipeline, earlier: str, tab: Tab) -> None:
    tab.page.goto(f"{pipeline.stack.remediator_urls[0]}/#token={pipeline.stack.token}")
    tab.wait_live()

    assert_orphan_row(pipeline, tab.row(earlier), earlier, EARLIER)


def test_orphan_recovered_while_the_page_is_open_appears_on_top_without_a_reload(
        pipeline: Pipeline, earlier: str, tab: Tab, tmp_path: Path) -> None:
    p = pipeline
    tab.page.goto(f"{p.stack.remediator_urls[0]}/#token={p.stack.token}")
    tab.wait_live()
    assert tab.row_ids() and earlier in tab.row_ids()
    tab.page.evaluate("window.__sameDocument = true")  # a reload would drop it

    started = p.start(LIVE, 0.5, "lose_report")
    floor = p.timing.orphan_floor(0.5, p.completed_window)
    tab.page.wait_for_selector(f'#rows tr[data-execution-id="{started.execution_id}"]',
                               timeout=(floor + SLACK + 10) * 1000)

    assert tab.page.evaluate("window.__sameDocument") is True
    assert len(tab.navigations) == 1, tab.navigations
    assert tab.row_ids()[0] == started.execution_id
    # The row is built from the audit trail once the recovery is complete there.
    row = eventually(lambda: tab.complete_row(started.execution_id), 10, "the row has its time to recovery")
    assert_orphan_row(p, row, started.execution_id, LIVE)
    assert earlier in tab.row_ids()
    save_screenshot(tab.page, tmp_path, "recoveries-page.png")


# -- evidence: the row's story, the announcement's link, Grafana's annotation, `explain` -------------

STORY_FACTS_JS = """id => [...document.querySelectorAll(
  `#rows tr.story-row[data-story-for="${id}"] li.event.this li.fact`)].map(li => li.textContent)"""


def test_recovered_row_expands_to_its_evidence(pipeline: Pipeline, earlier: str, tab: Tab, tmp_path: Path) -> None:
    """Clicking the recovered row shows its story; the facts of its decision are what the database,
    the agent and Alertmanager said."""
    p = pipeline
    tab.page.goto(f"{p.stack.remediator_urls[0]}/#token={p.stack.token}")
    tab.wait_live()
    recovered_row = tab.page.locator(f'#rows tr.recovery[data-execution-id="{earlier}"]',
                                     has=tab.page.locator('td[data-field="outcome"]', has_text="recovered"))

    recovered_row.first.click()
    tab.page.wait_for_selector(f'#rows tr.story-row[data-story-for="{earlier}"] li.event.this li.fact',
                               timeout=15_000)

    facts: list[str] = tab.page.evaluate(STORY_FACTS_JS, earlier)
    row = p.row(earlier)
    assert any(f.startswith("guarded update") and repr(row.error) in f for f in facts), facts
    assert any(f.startswith("agent: GET /api/executions/running answered in ")
               and "in none of running, pending, recently completed" in f for f in facts), facts
    assert any(f.startswith("row as read at ") and "status running, agent " + EARLIER in f for f in facts), facts
    assert any(f.startswith(f"delivered by {p.stack.alertmanager_urls[0]} ") for f in facts), facts
    kinds = tab.page.eval_on_selector_all(f'#rows tr.story-row[data-story-for="{earlier}"] li.event',
                                          "items => items.map(i => i.dataset.kind)")
    assert {"alert_fired", "notification", "decision", "recovered", "slot_released", "announced"} <= set(kinds)
    save_screenshot(tab.page, tmp_path, "recoveries-page-evidence.png")

    recovered_row.first.click()  # and folds away again
    tab.page.wait_for_selector(f'#rows tr.story-row[data-story-for="{earlier}"]', state="detached", timeout=5_000)


def test_announcement_links_to_the_story_and_grafana_annotates_the_recovery(
        pipeline: Pipeline, earlier: str, tab: Tab) -> None:
    p = pipeline
    url = p.stack.remediator_urls[0]
    [event] = eventually(lambda: p.announcements(earlier), 10, "the recovery's announcement arrived")
    assert event["story_url"] == f"{url}/#execution={earlier}"

    tab.page.goto(f"{url}/#token={p.stack.token}")  # the browser remembers the token ...
    tab.wait_live()
    tab.page.goto(event["story_url"])  # ... so the link from the announcement needs none
    tab.page.wait_for_selector('#story:not([hidden]) li.event[data-kind="announced"]', timeout=15_000)
    assert tab.page.get_attribute("#story", "data-execution-id") == earlier

    # Grafana's annotation query, as the dashboard holds it: one series per recovery, its value the
    # recovery's time in ms, its story_url the announcement's link.
    expr = dict(labelled_queries())["annotation 'Recoveries'"]
    [series] = eventually(lambda: [s for s in p.series(expr) if s["metric"]["execution_id"] == earlier], 30,
                          "Prometheus scraped the recovery")
    assert series["metric"]["story_url"] == event["story_url"]
    recovered_at = parse_utc(p.recovery(earlier).recovered_at).timestamp() * 1000
    assert float(series["value"][1]) == pytest.approx(recovered_at, abs=1)


def test_explain_asks_the_running_remediator(pipeline: Pipeline, earlier: str, tmp_path: Path) -> None:
    p = pipeline
    token_file = tmp_path / "token"
    token_file.write_text(p.stack.token)
    argv = [sys.executable, "-m", "exec_watchdog", "explain", earlier, "--remediator-url", p.stack.remediator_urls[0],
            f"--bearer-token-file={token_file}"]

    text = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    as_json = subprocess.run([*argv, "--format", "json"], capture_output=True, text=True, timeout=60, check=False)

    assert text.returncode == 0 and as_json.returncode == 0, text.stderr + as_json.stderr
    story = json.loads(as_json.stdout)
    assert story["execution"]["error"] == p.row(earlier).error
    assert f"  error: {p.row(earlier).error}" in text.stdout
    assert [e["kind"] for e in story["timeline"] if e["kind"] == "announced"] == ["announced"]
    assert "announced as orphan_recovered" in text.stdout
