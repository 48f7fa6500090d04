"""Announcing a recovery: Trinity's ``watchdog_recovery`` event on the WebSocket feed, an optional
Redis channel and Trinity's own UI feed (the Redis Stream ``trinity:events``), and one canonical
JSON log line.

The stream entry is Trinity's envelope (its event_bus): fields ``payload`` (the event as JSON),
``scope`` (``all``) and ``agent_name``, trimmed to about ``STREAM_MAXLEN`` entries. Every backend
worker relays that stream to its ``/ws`` clients, so Trinity's UI shows our recoveries as its own.
It is written by the same script as the channel message, behind the same once-only marker: one
stream entry per recovery, whatever the retries.

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
    EXPIRE_BACKLOG,
    FAIL_NO_SESSION,
    FAIL_ORPHAN,
    FAIL_STALE,
    FAIL_STALE_ACTIVITY,
    FINALIZE_SKIPPED,
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
                 RELEASE_LEAKED_SLOT: "slot_released",
                 # Rows Trinity's cleanup service ends (issue 22): the event's action names the path.
                 FINALIZE_SKIPPED: "skipped_finalized", EXPIRE_BACKLOG: "backlog_expired",
                 FAIL_STALE_ACTIVITY: "activity_failed",  # its execution_id field carries the activity's id
                 # Trinity's cleanup sweeps announce nothing of their own; ours say which sweep ended the run.
                 FAIL_STALE: "stale_failed", FAIL_NO_SESSION: "no_session_failed"}
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
    if recovery.detected_at is not None:  # when the run was lost: the demo's account shows "detected after"
        event["detected_at"] = format_utc(recovery.detected_at)
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
  if KEYS[2] ~= '' then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'payload', ARGV[3], 'scope', 'all', 'agent_name', ARGV[4])
  end
  return 1
end
return 0
"""
ANNOUNCED_MARKER_TTL_SECONDS = 7 * 24 * 3600
TRINITY_STREAM = "trinity:events"  # Trinity's event_bus STREAM_KEY
STREAM_MAXLEN = 10_000  # Trinity's REDIS_STREAM_MAXLEN default (approximate trim)
TURN_EVERY = 200  # recoveries announced between two turns given to the event loop's other tasks


class Announcer:
    def __init__(self, hub: WebSocketHub, redis: Redis | None, channel: str, external_url: str = "",
                 stream: str = TRINITY_STREAM) -> None:
        self.hub = hub
        self.redis = redis
        self.channel = channel
        self.external_url = external_url
        self.stream = stream  # empty: no stream entry

    async def announce(self, recoveries: list[Recovery], now: datetime) -> None:
        """Publish every event once; raises if Redis is configured and unreachable (the caller retries)."""
        events = [recovery_event(r, self.external_url) for r in recoveries]
        fresh = [True] * len(events)
        if self.redis is not None and events:
            async with self.redis.pipeline(transaction=False) as pipe:
                for event in events:
                    # One marker per recovery: a re-run of a recovered id is announced again.
                    marker = f"watchdog:announced:{event['execution_id']}:{event['timestamp']}"
                    pipe.eval(_PUBLISH_ONCE, 2, marker, self.stream, ANNOUNCED_MARKER_TTL_SECONDS, self.channel,
                              json.dumps(event), event["agent_name"], STREAM_MAXLEN)
                fresh = [bool(published) for published in await pipe.execute()]
        for index, (recovery, event, first_time) in enumerate(zip(recoveries, events, fresh, strict=True)):
            if index % TURN_EVERY == TURN_EVERY - 1:
                await asyncio.sleep(0)  # thousands of recoveries: /healthz and other deliveries get turns
            if not first_time:
                continue  # announced by an earlier attempt whose bookkeeping did not finish
            await self.hub.broadcast(json.dumps(event))
            log.info("recovery", agent=recovery.agent_name, execution_id=recovery.execution_id,
                     action=recovery.action, event_action=event["action"], reason=recovery.reason,
                     story_url=event.get("story_url", ""),
                     runtime_seconds=round(recovery.runtime_seconds, 3), fingerprint=recovery.fingerprint,
                     time_to_recovery_seconds=round((recovery.recovered_at - recovery.alert_started_at)
                                                    .total_seconds(), 3))
