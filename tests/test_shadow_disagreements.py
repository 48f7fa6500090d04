"""Each kind of disagreement, made by the model of Trinity's cleanup service itself and found by the
shadow comparison with the right verdict and its evidence.

Real parts: SQLite, Redis with Trinity's slot layout, simulated agents running real processes, the
remediator app in shadow (its webhook, its decisions), ``PlatformCleanup`` in charge with its real
300 s cycle (its start-up sweep, then nothing for 300 s), and the comparison. Our alerts are posted
as Alertmanager sends them (the pipeline that would raise them is another test's: test_e2e_shadow.py).

- (a) **theirs_only, then a late success**: Trinity's stale sweep (Phase 1) asks no agent, so a run
  past its agent's window (agent timeout + 300 s) is failed even while its agent still runs it
  under a longer schedule timeout; our rules never fire on a run its agent lists. The run then
  reports success, which Trinity lets overwrite its failure: the verdict keeps their text and adds
  the later status.
- (b) **different**: a run past the stale window finishes and its report is lost; its agent keeps
  the result. In the same cycle Trinity's Phase 0 defers the claim (the result is younger than its
  180 s) and Phase 1 then fails the run stale, while we would claim the retained success (#2944).
  Trinity's Phase 0 does claim retained results, but only 180 s after they are kept: the stale
  sweep running after it in the same cycle is what fails them first.
- (c) **ours_only**: an orphan appears right after their start-up sweep; we decide within seconds,
  they would act only at their next cycle, 300 s later. The comparison's window is shortened to
  1 s here (``--shadow-their-cycle 0 --shadow-their-margin 1``) so the test need not wait 360 s;
  the platform's cleanup keeps its real cycle. Its cycle at 300 s is then run by hand: their late
  write is noted on the verdict, which is not given again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from exec_watchdog.common.serving import opened
from exec_watchdog.platform_access.agent_client import AgentClient
from exec_watchdog.platform_access.inflight import open_inflight_store
from exec_watchdog.platform_access.schema import schedule_executions
from exec_watchdog.remediator import shadow_report, shadow_store, texts
from exec_watchdog.remediator.app import State
from exec_watchdog.remediator.shadow_compare import Comparison
from exec_watchdog.remediator.shadow_verdicts import Settings as ShadowSettings
from exec_watchdog.simulated_platform.agent_server import AgentServer
from exec_watchdog.simulated_platform.platform_cleanup import PlatformCleanup
from exec_watchdog.simulated_platform.process_registry import RunResult
from exec_watchdog.testbed.agent_runs import retained_then_forgotten
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.platform_rows import insert_agent, insert_schedule
from exec_watchdog.testbed.remediator_harness import SECRET, Harness, remediator

pytestmark = pytest.mark.timeout(60)

WINDOW = ShadowSettings(interval_seconds=3600, their_cycle_seconds=0, their_margin_seconds=1.0,
                        our_grace_seconds=1.0)
AGENT_TIMEOUT = 600  # agent_ownership's: Trinity's stale window is 600 + 300 s


@pytest.fixture
async def harness(sqlite_url: str, redis_url: str, redis_client: redis.Redis,
                  agents: AgentServer) -> AsyncIterator[Harness]:
    async with remediator(sqlite_url, redis_url, agents, shadow=True, shadow_comparison=WINDOW,
                          claim_defer_seconds=0) as h:
        with h.engine.begin() as conn:
            for name in ("a1", "a2"):
                insert_agent(conn, name, timeout_seconds=AGENT_TIMEOUT)
            insert_schedule(conn, "s-long", "a1", timeout_seconds=5000)  # longer than the agent's own
        yield h


@pytest.fixture
async def cleanup(harness: Harness, agents: AgentServer, redis_url: str) -> AsyncIterator[PlatformCleanup]:
    client = AgentClient(agents.url_template, SECRET, timeout=15.0)
    service = PlatformCleanup(harness.engine, harness.slots, open_inflight_store(redis_url, harness.engine), client)
    yield service
    await service.aclose()
    await client.aclose()


async def _retain_success(agents: AgentServer, agent: str, execution_id: str) -> None:
    await retained_then_forgotten(agents.registry(agent), execution_id, RunResult(True, "the answer", 0.25))


async def _decide(h: Harness, *alerts: dict[str, Any]) -> list[str]:
    response = await h.post(notification(*alerts))
    assert response.status_code == 200, response.text
    return [v["reason"] for v in response.json()["alerts"]]


def _verdicts(h: Harness) -> dict[str, dict[str, Any]]:
    with h.engine.connect() as conn:
        return {r["subject_id"]: r for r in shadow_store.listed(conn)}


async def test_each_disagreement_with_the_platform_cleanup_is_reported_with_its_verdict(
        harness: Harness, agents: AgentServer, cleanup: PlatformCleanup, sqlite_url: str) -> None:
    h = harness
    state = opened(h.app, State)
    comparison = Comparison(h.engine, state.remediator.slots, state.metrics, "test-replica", WINDOW)
    # (a) a run its agent still runs under a 5000 s schedule, 1000 s old: past the 900 s stale window.
    h.add_execution("e-late-success", "a1", age_seconds=1000, schedule_id="s-long", claude_session_id="s")
    await agents.registry("a1").start("e-late-success", 600)
    # (b) a run past the stale window whose report was lost a moment ago: its agent keeps the result.
    h.add_execution("e-claim", "a2", age_seconds=1000, claude_session_id="s")
    await _retain_success(agents, "a2", "e-claim")
    assert await _decide(h, alert("e-claim", "a2")) == ["shadow: would claim result"]

    cleanup.start()  # the start-up sweep now, the next cycle in 300 s
    deadline = time.monotonic() + 20
    while cleanup.cycles < 1:
        assert time.monotonic() < deadline, "the start-up sweep did not run"
        await asyncio.sleep(0.05)
    theirs = {d.execution_id: d for d in cleanup.decisions if d.action == "fail_stale"}
    # Phase 1 fails both; the start-up sweep then drops their slots (finished rows) as leaks.
    assert sorted((d.execution_id, d.action) for d in cleanup.decisions) == [
        ("e-claim", "fail_stale"), ("e-claim", "release_leaked_slot"),
        ("e-late-success", "fail_stale"), ("e-late-success", "release_leaked_slot")]
    assert agents.registry("a1").status("e-late-success") is not None  # Phase 1 asks no agent: still running

    # (c) an orphan right after their sweep; we decide on it at once.
    h.add_execution("e-missed", "a1", age_seconds=120, claude_session_id="s")
    assert await _decide(h, alert("e-missed", "a1")) == ["shadow: would fail orphan"]
    first = {s.subject_id: verdict for s, verdict in await asyncio.to_thread(comparison.compare)}
    assert first == {"e-claim": "different"}
    with h.engine.begin() as conn:  # (a) the run reports success; Trinity lets it overwrite the failure
        conn.execute(sa.update(schedule_executions).where(schedule_executions.c.id == "e-late-success")
                     .values(status="success", error=None))
    await asyncio.sleep(1.1)  # past their (shortened) window and our grace
    second = {s.subject_id: verdict for s, verdict in await asyncio.to_thread(comparison.compare)}
    assert second == {"e-late-success": "theirs_only", "e-missed": "ours_only"}

    await cleanup.run_cycle()  # their cycle at 300 s: it fails the orphan we decided on long before
    assert [d.action for d in cleanup.decisions if d.execution_id == "e-missed"] == ["fail_orphan"]
    assert await asyncio.to_thread(comparison.compare) == []  # noted on the verdict, never judged again

    rows = _verdicts(h)
    late = rows["e-late-success"]
    assert (late["their_action"], late["their_status"], late["later_status"]) == ("fail_stale", "failed", "success")
    assert late["their_error"] == theirs["e-late-success"].text == texts.stale_text(AGENT_TIMEOUT + 300)
    assert late["our_action"] is None
    claim = rows["e-claim"]
    assert (claim["our_action"], claim["their_action"]) == ("claim_result", "fail_stale"), claim
    missed = rows["e-missed"]
    assert (missed["our_action"], missed["their_action"], missed["their_late_action"]) == \
        ("fail_orphan", None, "fail_orphan")

    report = shadow_report.build(sqlite_url, None)
    assert report["totals"] == {"agree": 0, "ours_only": 1, "theirs_only": 1, "different": 1}
    story = {d["subject_id"]: d for d in report["disagreements"]}
    assert story["e-late-success"]["theirs"]["later_status"] == "success"
    assert story["e-claim"]["ours"]["reason"] == "shadow: would claim result"
    assert story["e-missed"]["theirs"]["late_action"] == "fail_orphan"

