"""The demo's live account: one readable line per thing that happens, and a periodic summary.

Sources: the scheduler (executions started with a fault, lost and late reports, agent restarts
and outages), Alertmanager's ``/api/v2/alerts`` (alerts firing, silenced, inhibited) and each
remediator's WebSocket feed (recoveries, with the time from the fault to the recovered row).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from exec_watchdog.common.contract import AGENT_UNREACHABLE, HEARTBEAT, SHADOW_VERDICTS, STUCK
from exec_watchdog.pipeline.platform import FaultClock
from exec_watchdog.platform_access.timestamps import BadTimestamp, parse_utc
from exec_watchdog.simulated_platform.scheduler import Started

FAULT_WORDS = {"lose_report": "its report will be lost", "hang": "will hang past its timeout",
               "late_report": "its report will arrive late", "none": "normal",
               "leak_slot": "its slot will never be released (a leak)",
               "expire_slot": "its slot is taken already past its TTL",
               "no_session": "never dispatched, no session (a silent launch failure)"}
ACTION_WORDS = {"orphan_recovered": "orphan failed", "auto_terminated": "overdue terminated",
                "result_recovered": "retained result claimed", "slot_reclaimed": "expired slot reclaimed, run failed",
                "slot_released": "leaked slot released, no row changed",
                "skipped_finalized": "skipped row finalized", "backlog_expired": "queued row expired",
                "activity_failed": "stale activity failed", "stale_failed": "stale run failed",
                "no_session_failed": "silent launch failure failed"}


class Account:
    def __init__(self, scheduler: FaultClock, out: TextIO | None = None, *, shadow: bool = False) -> None:
        self.scheduler = scheduler
        self.shadow = shadow  # demo --shadow: the platform's cleanup is in charge, the remediator compares
        self.out = out or sys.stdout
        self.counts: Counter[str] = Counter()
        self.recovered: dict[str, tuple[str, float | None]] = {}  # execution -> (event action, seconds)
        self.detected: dict[str, float] = {}  # execution -> the remediator's "detected after", seconds
        self.alerts: dict[str, tuple[str, str, str]] = {}  # fingerprint -> (alert name, state, where)
        self.slots_removed: set[str] = set()  # expired slots removed with their run left as it is
        self.cleanup_writes: Counter[str] = Counter()  # the platform cleanup's writes, by action
        self.verdicts: dict[tuple[str, str], str] = {}  # (subject kind, id) -> verdict
        self.began = time.monotonic()

    def line(self, tag: str, text: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        print(f"{stamp}  {tag:<10} {text}", file=self.out, flush=True)

    # -- the platform ---------------------------------------------------------------------------

    def on_event(self, kind: str, s: Started, detail: str) -> None:
        if kind == "started":
            self.counts[f"started_{s.fault}"] += 1
            if s.fault != "none":
                self.line("started", f"{s.agent}  {s.execution_id}  {s.fault}: {FAULT_WORDS[s.fault]} "
                                     f"(timeout {s.timeout_seconds} s)")
        elif kind == "report_lost":
            self.line("lost", f"{s.agent}  {s.execution_id}  process ended, completion report lost")
        elif kind == "completed" and s.fault == "late_report":
            self.line("late", f"{s.agent}  {s.execution_id}  late report arrived: success, never failed")
        elif kind == "slot_leaked":
            self.line("leaked", f"{s.agent}  {s.execution_id}  reported, its capacity slot left held")
        elif kind == "report_too_late":
            self.counts["report_too_late"] += 1
            self.line("too late", f"{s.agent}  {s.execution_id}  report arrived after the watchdog "
                                  f"recovered it ({detail})")

    def on_agent(self, what: str, agent: str, forgotten: int) -> None:
        self.counts[f"agent_{what}"] += 1
        words = {"restarted": f"restarted: its {forgotten} running execution(s) are forgotten, unreported",
                 "down": "stopped answering (outage): its executions must be left alone",
                 "up": "answers again",
                 "gone": f"removed for good: its {forgotten} execution(s) end through the stale sweeps",
                 "partitioned": "the whole fleet stopped answering the watchdog: the fleet guard must hold",
                 "healed": "the fleet answers the watchdog again"}
        self.line("agent", f"{agent}  {words.get(what, what)}")

    # -- Alertmanager ---------------------------------------------------------------------------

    def on_alerts(self, alerts: list[dict[str, Any]]) -> None:
        seen: dict[str, tuple[str, str, str]] = {}
        names = {str(a.get("fingerprint")): (a.get("labels") or {}).get("alertname", "?") for a in alerts}
        for alert in alerts:
            labels = alert.get("labels") or {}
            name = labels.get("alertname", "?")
            if name in (HEARTBEAT, STUCK):  # always on / a warning about long runs: noise here
                continue
            status = alert.get("status") or {}
            fingerprint = str(alert.get("fingerprint"))
            where = "  ".join(labels[k] for k in ("agent", "execution_id") if k in labels)
            seen[fingerprint] = (name, status.get("state", "?"), where)
            if self.alerts.get(fingerprint) == seen[fingerprint]:
                continue
            why = ""
            if status.get("silencedBy"):
                why = " (silenced: nothing is sent)"
            elif status.get("inhibitedBy"):
                by = sorted({names.get(str(f), "an alert that has ended") for f in status["inhibitedBy"]})
                why = f" (inhibited by {', '.join(by)})"
            since = ""
            with contextlib.suppress(BadTimestamp):
                since = f" since {parse_utc(alert.get('startsAt')).astimezone().strftime('%H:%M:%S')}"
            self.line("ALERT", f"{name}  {where}  {seen[fingerprint][1]}{since}{why}")
        for fingerprint, (name, _, where) in self.alerts.items():
            if fingerprint not in seen and name == AGENT_UNREACHABLE:
                self.line("resolved", f"{name}  {where}")
        self.alerts = seen

    # -- the remediator -------------------------------------------------------------------------

    def on_recovery(self, event: dict[str, Any]) -> None:
        execution_id = str(event.get("execution_id"))
        if event.get("type") != "watchdog_recovery" or execution_id in self.recovered:
            return
        action = str(event.get("action"))
        seconds: float | None = None
        fault = self.scheduler.fault_at.get(execution_id)
        try:
            if fault is not None:
                seconds = (parse_utc(event.get("timestamp")) - fault).total_seconds()
        except BadTimestamp:
            pass
        self.recovered[execution_id] = (action, seconds)
        after = f"{seconds:.1f} s after the fault" if seconds is not None else "fault time unknown"
        detected = detected_after(event)
        if detected is not None:  # the remediator's own measure: from when the run was lost
            self.detected[execution_id] = detected
            after += f" (detected after {detected:.1f} s)"
        story = f"  story: {event['story_url']}" if event.get("story_url") else ""
        self.line("RECOVERED", f"{event.get('agent_name')}  {execution_id}  {ACTION_WORDS.get(action, action)}, "
                               f"{after}: {event.get('reason')}{story}")

    def on_decisions(self, decisions: list[dict[str, Any]]) -> None:
        """Expired slots removed while their run is left as it is: recorded in the audit, announced to
        nobody (as in Trinity), so the account reads them from the audit API."""
        for d in reversed(decisions):  # oldest first
            execution_id = str(d.get("execution_id"))
            if d.get("outcome") != "recovered" or execution_id in self.slots_removed or \
                    "left" not in str(d.get("reason")):
                continue
            self.slots_removed.add(execution_id)
            self.line("SLOT", f"{d.get('agent_name')}  {execution_id}  expired slot removed, run left as it is: "
                              f"{d.get('reason')}")

    # -- shadow mode: the platform's cleanup and the verdicts -----------------------------------------

    def on_cleanup(self, decision: Any) -> None:
        """A write of the platform's cleanup (a ``cleanup_paths.context.Decision``)."""
        self.cleanup_writes[decision.action] += 1
        self.line("PLATFORM", f"{decision.agent}  {decision.execution_id}  {decision.action} by the platform's "
                              f"cleanup: {decision.text}")

    def on_verdicts(self, verdicts: list[dict[str, Any]]) -> None:
        """The shadow comparison's verdicts (oldest first); each is printed once, as it is given."""
        for v in verdicts:
            key = (str(v.get("subject_kind")), str(v.get("subject_id")))
            if key in self.verdicts:
                continue
            self.verdicts[key] = str(v.get("verdict"))
            lead = v.get("lead_seconds")
            lead_text = f", lead {lead:+.1f} s" if isinstance(lead, int | float) else ""
            later = f"; later the row became {v['later_status']}" if v.get("later_status") else ""
            self.line("VERDICT", f"{v.get('verdict')}  {v.get('action')}  {v.get('agent_name')}  {key[0]}:{key[1]}"
                                 f"{lead_text}: {v.get('why')}{later}")

    def shadow_summary(self) -> str:
        by_verdict = Counter(self.verdicts.values())
        counted = ", ".join(f"{verdict} {by_verdict[verdict]}" for verdict in SHADOW_VERDICTS)
        return (f"; platform cleanup wrote {sum(self.cleanup_writes.values())}; verdicts {len(self.verdicts)} "
                f"({counted})")

    # -- summary --------------------------------------------------------------------------------

    def summary(self) -> str:
        c = self.counts
        started = sum(v for k, v in c.items() if k.startswith("started_"))
        by_action = Counter(action for action, _ in self.recovered.values())
        times = [s for _, s in self.recovered.values() if s is not None]
        median = f", median {statistics.median(times):.1f} s from fault" if times else ""
        if self.detected:
            median += f", median detected after {statistics.median(self.detected.values()):.1f} s"
        firing = sum(1 for _, state, _ in self.alerts.values() if state == "active")
        paths = ", ".join(f"{ACTION_WORDS.get(a, a).split(',')[0]} {n}" for a, n in by_action.most_common())
        removed = f"; expired slots removed (run left) {len(self.slots_removed)}" if self.slots_removed else ""
        return (f"{time.monotonic() - self.began:.0f} s: started {started} (lost reports {c['started_lose_report']}, "
                f"hung {c['started_hang']}, late reports {c['started_late_report']}); agent restarts "
                f"{c['agent_restarted']}, outages {c['agent_down']}; alerts active now {firing}; recovered "
                f"{len(self.recovered)} ({paths or 'none yet'}{median}){removed}"
                f"{self.shadow_summary() if self.shadow else ''}")


def detected_after(event: dict[str, Any]) -> float | None:
    """Seconds from the moment the run was lost (the event's ``detected_at``) to its recovery."""
    try:
        return max(0.0, (parse_utc(event.get("timestamp")) - parse_utc(event.get("detected_at"))).total_seconds())
    except BadTimestamp:
        return None


async def listen_recoveries(remediator_url: str, token: str, on_event: Callable[[dict[str, Any]], None]) -> None:
    """Follow one remediator's WebSocket feed forever, reconnecting after a drop."""
    url = remediator_url.replace("http://", "ws://", 1) + f"/api/v1/events?access_token={token}"
    while True:
        try:
            async with connect(url, open_timeout=5) as ws:
                async for message in ws:
                    try:
                        event = json.loads(message)
                    except ValueError:
                        continue
                    if isinstance(event, dict):
                        on_event(event)
        except (OSError, WebSocketException, TimeoutError):
            pass
        await asyncio.sleep(1.0)


async def poll_slot_removals(remediator_url: str, token: str, on_decisions: Callable[[list[dict[str, Any]]], None],
                             interval: float = 1.0) -> None:
    """Read the remediator's latest expired-slot decisions every ``interval`` seconds."""
    url = f"{remediator_url}/api/v1/audit?action=reclaim_expired_slot&outcome=recovered&limit=50"
    async with httpx.AsyncClient(timeout=httpx.Timeout(3.0), headers={"Authorization": f"Bearer {token}"}) as http:
        while True:
            try:
                response = await http.get(url)
                body = response.json() if response.status_code == 200 else None
                if isinstance(body, dict) and isinstance(body.get("decisions"), list):
                    on_decisions(body["decisions"])
            except (httpx.HTTPError, ValueError):
                pass
            await asyncio.sleep(interval)


async def poll_alerts(alertmanager_url: str, on_alerts: Callable[[list[dict[str, Any]]], None],
                      interval: float = 0.5) -> None:
    """Read Alertmanager's alerts (active, silenced and inhibited) every ``interval`` seconds."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(3.0)) as http:
        while True:
            try:
                response = await http.get(f"{alertmanager_url}/api/v2/alerts")
                body = response.json() if response.status_code == 200 else None
                if isinstance(body, list):
                    on_alerts(body)
            except (httpx.HTTPError, ValueError):
                pass
            await asyncio.sleep(interval)
