"""Announcing a recovery: Trinity's ``watchdog_recovery`` event on the WebSocket feed and an
optional Redis channel, and one canonical JSON log line.

When the remediator knows its own address (``--external-url``), the event also carries
``story_url``: the live page opened on that execution's story (evidence and timeline). Trinity's
UI reads the fields it knows and ignores the extra one."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any
from urllib.parse import quote

import structlog
from redis.asyncio import Redis
from starlette.websockets import WebSocket

from exec_watchdog.common.contract import (
    CLAIM_RESULT,
    FAIL_ORPHAN,
    RECLAIM_EXPIRED_SLOT,
    RECLAIM_SLOT_UNREACHABLE,
    RELEASE_LEAKED_SLOT,
    TERMINATE_OVERDUE,
)
from exec_watchdog.common.redaction import redact
from exec_watchdog.platform_access.timestamps import format_utc
from exec_watchdog.remediator.audit import Recovery

EVENT_ACTIONS = {FAIL_ORPHAN: "orphan_recovered", TERMINATE_OVERDUE: "auto_terminated",
                 CLAIM_RESULT: "result_recovered",
                 # Capacity slots: a run failed because its slot expired, or only a slot released.
                 RECLAIM_EXPIRED_SLOT: "slot_reclaimed", RECLAIM_SLOT_UNREACHABLE: "slot_reclaimed",
                 RELEASE_LEAKED_SLOT: "slot_released"}
log = structlog.get_logger("exec_watchdog.remediator")


def story_url(external_url: str, execution_id: str) -> str:
    """The live page opened on one execution's story; empty when the remediator's address is unknown."""
    return f"{external_url.rstrip('/')}/#execution={quote(execution_id, safe='')}" if external_url else ""


def recovery_event(recovery: Recovery, external_url: str = "") -> dict[str, Any]:
    """The event shape Trinity's UI understands, plus the link to the story when there is one."""
    event = {
        "type": "watchdog_recovery",
        "agent_name": recovery.agent_name,
        "execution_id": recovery.execution_id,
        "action": EVENT_ACTIONS.get(recovery.action, recovery.action[:64]),  # a hand-edited row is still announced
        "reason": redact(recovery.reason),
        "timestamp": format_utc(recovery.recovered_at),
    }
    link = story_url(external_url, recovery.execution_id)
    if link:
        event["story_url"] = link
    return event


class WebSocketHub:
    """Connected dashboards; a client that cannot keep up is dropped, never waited for."""

    def __init__(self) -> None:
        self._clients: set[WebSocket] = set()

    def add(self, ws: WebSocket) -> None:
        self._clients.add(ws)

    def remove(self, ws: WebSocket) -> None:
        self._clients.discard(ws)

    @property
    def size(self) -> int:
        return len(self._clients)

    async def broadcast(self, text: str) -> None:
        async def send(ws: WebSocket) -> None:
            try:
                await asyncio.wait_for(ws.send_text(text), timeout=2.0)
            except Exception:  # a gone or slow client must not block recoveries
                self.remove(ws)

        await asyncio.gather(*(send(ws) for ws in list(self._clients)))


# PUBLISH only the first time an execution is announced. A retry after a timed-out publish (the
# first one may still be delivered when Redis answers again) or after a crash between publishing
# and recording it then cannot announce twice. The marker outlives any retry by far.
_PUBLISH_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
"""
ANNOUNCED_MARKER_TTL_SECONDS = 7 * 24 * 3600


class Announcer:
    def __init__(self, hub: WebSocketHub, redis: Redis | None, channel: str, external_url: str = "") -> None:
        self.hub = hub
        self.redis = redis
        self.channel = channel
        self.external_url = external_url

    async def announce(self, recoveries: list[Recovery], now: datetime) -> None:
        """Publish every event once; raises if Redis is configured and unreachable (the caller retries)."""
        events = [recovery_event(r, self.external_url) for r in recoveries]
        fresh = [True] * len(events)
        if self.redis is not None and events:
            async with self.redis.pipeline(transaction=False) as pipe:
                for event in events:
                    # One marker per recovery: a re-run of a recovered id is announced again.
                    marker = f"watchdog:announced:{event['execution_id']}:{event['timestamp']}"
                    pipe.eval(_PUBLISH_ONCE, 1, marker,
                              ANNOUNCED_MARKER_TTL_SECONDS, self.channel, json.dumps(event))
                fresh = [bool(published) for published in await pipe.execute()]
        for recovery, event, first_time in zip(recoveries, events, fresh, strict=True):
            if not first_time:
                continue  # announced by an earlier attempt whose bookkeeping did not finish
            await self.hub.broadcast(json.dumps(event))
            log.info("recovery", agent=recovery.agent_name, execution_id=recovery.execution_id,
                     action=recovery.action, event_action=event["action"], reason=recovery.reason,
                     story_url=event.get("story_url", ""),
                     runtime_seconds=round(recovery.runtime_seconds, 3), fingerprint=recovery.fingerprint,
                     time_to_recovery_seconds=round((recovery.recovered_at - recovery.alert_started_at)
                                                    .total_seconds(), 3))
