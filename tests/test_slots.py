"""Capacity slot release: exactly one execution's slot, on a real Redis and on the SQL table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.slots import RedisSlots, SlotStore, SqlSlots, slot_metadata
from exec_watchdog.platform_access.timestamps import utcnow


@pytest.fixture(params=["redis", "sql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SlotStore:
    if request.param == "redis":
        client: Any = request.getfixturevalue("redis_client")
        return RedisSlots(client)
    engine = db.create_engine(f"sqlite:///{tmp_path / 'slots.db'}")
    db.create_platform_tables(engine, slot_metadata)
    return SqlSlots(engine)


def test_release_removes_exactly_that_slot(store: SlotStore) -> None:
    for execution_id in ("e1", "e2", "e3"):
        store.acquire("a1", execution_id, utcnow(), "msg", 3600)
    store.acquire("a2", "e1", utcnow(), "same id, other agent", 3600)
    assert store.release("a1", "e2") is True
    assert store.held("a1") == {"e1", "e3"}
    assert store.held("a2") == {"e1"}
    assert store.used_by_agent() == {"a1": 2, "a2": 1}


def test_release_is_idempotent(store: SlotStore) -> None:
    store.acquire("a1", "e1", utcnow(), "msg", 60)
    assert store.release("a1", "e1") is True
    assert store.release("a1", "e1") is False
    assert store.used_by_agent() == {}


def test_redis_layout_matches_trinity(redis_client: redis.Redis) -> None:
    slots = RedisSlots(redis_client)
    slots.acquire("a1", "e1", utcnow(), "x" * 500, 600)
    slots.acquire("a1", "e2", utcnow(), "y", 600)
    assert redis_client.zrange("agent:slots:a1", 0, -1) == [b"e1", b"e2"]
    slot = redis_client.hgetall("agent:slot:a1:e1")
    assert set(slot) == {b"started_at", b"message_preview", b"slot_number", b"timeout_seconds"}
    assert len(slot[b"message_preview"]) == 100 and slot[b"timeout_seconds"] == b"600"
    assert 600 < redis_client.ttl("agent:slot:a1:e1") <= 900
    slots.release("a1", "e1")
    assert not redis_client.exists("agent:slot:a1:e1")
    assert redis_client.exists("agent:slot:a1:e2")
    assert redis_client.zrange("agent:slots:a1", 0, -1) == [b"e2"]


def test_entries_list_every_slot_but_drain_placeholders_with_score_and_hash_timeout(store: SlotStore) -> None:
    started = utcnow()
    store.acquire("a1", "e1", started, "msg", 600)
    store.acquire("a1", "drain-x", started, "placeholder", 600)
    store.acquire("a2", "e2", started, "msg", 1200)
    entries = sorted(store.entries(), key=lambda e: e.execution_id)
    assert [(e.agent, e.execution_id, e.timeout_seconds) for e in entries] == [("a1", "e1", 600), ("a2", "e2", 1200)]
    assert abs(entries[0].acquired_at - started.timestamp()) < 0.01
    assert store.entry("a1", "e1") == entries[0]
    assert store.entry("a1", "e2") is None
    assert store.paused() is False


def test_a_slot_whose_hash_expired_has_no_timeout_and_governor_pause_is_seen(redis_client: redis.Redis) -> None:
    slots = RedisSlots(redis_client)
    slots.acquire("a1", "e1", utcnow(), "msg", 600)
    redis_client.delete("agent:slot:a1:e1")
    [entry] = slots.entries()
    assert entry.timeout_seconds is None and slots.entry("a1", "e1") == entry
    redis_client.set("governor:pause", "1")
    assert slots.paused() is True
