"""Reading Trinity's UI feed, the Redis Stream ``trinity:events``, as a backend worker's relay reads it."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import redis

STREAM = "trinity:events"


@dataclass(frozen=True, slots=True)
class StreamEntry:
    entry_id: str
    payload: dict[str, Any]
    scope: str
    agent_name: str
    fields: frozenset[str]


def read_stream(url: str, stream: str = STREAM, after: str = "-") -> list[StreamEntry]:
    """Every entry of the stream (after ``after``, exclusive when given an id), oldest first."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        start = "-" if after == "-" else f"({after}"
        raw: Any = client.xrange(stream, min=start, max="+")
    finally:
        client.close()
    return [StreamEntry(entry_id, json.loads(fields["payload"]), fields.get("scope", ""),
                        fields.get("agent_name", ""), frozenset(fields)) for entry_id, fields in raw]


def recoveries_per_execution(url: str, stream: str = STREAM) -> Counter[str]:
    """How many ``watchdog_recovery`` entries the stream holds per execution id."""
    return Counter(str(e.payload.get("execution_id")) for e in read_stream(url, stream)
                   if e.payload.get("type") == "watchdog_recovery")
