"""In-flight dispatch markers: Trinity's Redis layout, the SQL twin, and the three verdicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.inflight import (
    DEFAULT_MAX_AGE_SECONDS,
    MARKER_TTL_SECONDS,
    InflightStore,
    RedisInflight,
    SqlInflight,
    Verdict,
    open_inflight_store,
    withholds,
)
from exec_watchdog.platform_access.slots import slot_metadata
from exec_watchdog.testbed import servers


class _Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["redis", "sql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> InflightStore:
    if request.param == "redis":
        client: Any = request.getfixturevalue("redis_client")
        return RedisInflight(client)
    engine = db.create_engine(f"sqlite:///{tmp_path / 'inflight.db'}")
    db.create_platform_tables(engine, slot_metadata)
    return SqlInflight(engine)


def test_marked_ids_are_alive_and_others_absent(store: InflightStore) -> None:
    store.mark("-leading-dash", "gamma_ops", "parked", 1_800_000_000.5, 4242)
    store.mark("e2", "a.b", "calling", 1_800_000_001.0, 1)
    verdicts = store.verdicts(["-leading-dash", "e2", "never-marked", "e2"])
    assert verdicts == {"-leading-dash": Verdict.ALIVE, "e2": Verdict.ALIVE, "never-marked": Verdict.ABSENT}


def test_clear_makes_a_marker_absent_and_is_idempotent(store: InflightStore) -> None:
    store.mark("e1", "a1", "parked", 1.0, 1)
    store.clear("e1")
    store.clear("e1")
    assert store.verdicts(["e1"]) == {"e1": Verdict.ABSENT}


def test_many_ids_get_a_verdict_each(store: InflightStore) -> None:
    ids = [f"id-{n}" for n in range(1_200)]
    for execution_id in ids[::100]:
        store.mark(execution_id, "a1", "parked", 1.0, 1)
    verdicts = store.verdicts(ids)
    assert len(verdicts) == 1_200
    assert {i for i, v in verdicts.items() if v is Verdict.ALIVE} == set(ids[::100])


def test_redis_layout_matches_trinity(redis_client: redis.Redis) -> None:
    store = RedisInflight(redis_client)
    store.mark("Ab_-9", "gamma_ops", "parked", 1_800_000_000.25, 77)
    raw = redis_client.get("execution:inflight:Ab_-9")
    assert raw is not None
    assert json.loads(raw) == {"agent": "gamma_ops", "phase": "parked", "since": 1_800_000_000.25, "pid": 77}
    assert 55 <= redis_client.ttl("execution:inflight:Ab_-9") <= MARKER_TTL_SECONDS
    redis_client.expire("execution:inflight:Ab_-9", 5)
    store.refresh(["Ab_-9", "lapsed"])
    assert redis_client.ttl("execution:inflight:Ab_-9") > 50
    assert not redis_client.exists("execution:inflight:lapsed"), "refresh must not resurrect a lapsed marker"


def test_a_marker_written_by_trinity_itself_reads_alive(redis_client: redis.Redis) -> None:
    """Any payload under the key is a live dispatcher: presence is the verdict, as in Trinity."""
    redis_client.set("execution:inflight:x1", json.dumps({"agent": "a", "phase": "calling", "since": 1, "pid": 2}),
                     ex=60)
    assert RedisInflight(redis_client).verdicts(["x1"]) == {"x1": Verdict.ALIVE}


@pytest.mark.parametrize("kind", ["hash", "list", "set", "zset", "stream"])
def test_a_key_of_another_type_at_a_markers_name_is_unknown_never_absent(redis_client: redis.Redis,
                                                                          kind: str) -> None:
    """Someone holds that name: the run is held like an unreadable marker, never failed as if no key existed."""
    key = "execution:inflight:odd"
    if kind == "hash":
        redis_client.hset(key, "agent", "a1")
    elif kind == "list":
        redis_client.rpush(key, "a1")
    elif kind == "set":
        redis_client.sadd(key, "a1")
    elif kind == "zset":
        redis_client.zadd(key, {"a1": 1.0})
    else:
        redis_client.xadd(key, {"agent": "a1"})
    assert redis_client.type(key) == kind.encode()
    assert RedisInflight(redis_client).verdicts(["odd", "none"]) == {"odd": Verdict.UNKNOWN, "none": Verdict.ABSENT}


def _bytes_sent_by_redis(client: redis.Redis) -> int:
    return int(client.info("stats")["total_net_output_bytes"])


def test_huge_markers_read_alive_without_their_values_crossing_the_wire(redis_client: redis.Redis) -> None:
    """30 markers of 5 MiB each: alive, and Redis sends a few KiB for them, not their 150 MiB."""
    blob = b"x" * (5 * 1024 * 1024)
    ids = [f"big-{n}" for n in range(30)]
    for execution_id in ids:
        redis_client.set(f"execution:inflight:{execution_id}", blob, ex=60)
    before = _bytes_sent_by_redis(redis_client)
    verdicts = RedisInflight(redis_client).verdicts([*ids, "small-absent"])
    sent = _bytes_sent_by_redis(redis_client) - before
    assert verdicts == {**dict.fromkeys(ids, Verdict.ALIVE), "small-absent": Verdict.ABSENT}
    assert sent < 64 * 1024, f"Redis sent {sent} bytes to learn 31 verdicts"


def test_markers_are_asked_by_type_never_by_value(redis_client: redis.Redis) -> None:
    """Each marker key is asked its TYPE once; no GET, MGET or GETRANGE reads any value."""
    redis_client.config_resetstat()
    RedisInflight(redis_client).verdicts([f"id-{n}" for n in range(1_200)])
    stats = redis_client.info("commandstats")
    assert stats["cmdstat_type"]["calls"] == 1_200
    assert not {"cmdstat_mget", "cmdstat_get", "cmdstat_getrange"} & set(stats)


def test_an_unreachable_redis_gives_unknown_for_every_id() -> None:
    store = RedisInflight.from_url(f"redis://127.0.0.1:{servers.free_port()}/0", timeout=0.5)
    assert store.verdicts(["a", "b"]) == {"a": Verdict.UNKNOWN, "b": Verdict.UNKNOWN}


def test_sql_markers_lapse_after_the_ttl_unless_refreshed(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'inflight.db'}")
    db.create_platform_tables(engine, slot_metadata)
    clock = _Clock()
    store = SqlInflight(engine, clock=clock)
    store.mark("kept", "a1", "parked", clock.now, 1)
    store.mark("lapses", "a1", "parked", clock.now, 1)
    clock.now += MARKER_TTL_SECONDS - 1
    store.refresh(["kept", "lapses-never-marked"])
    clock.now += 2
    assert store.verdicts(["kept", "lapses"]) == {"kept": Verdict.ALIVE, "lapses": Verdict.ABSENT}
    store.refresh(["lapses"])
    assert store.verdicts(["lapses"]) == {"lapses": Verdict.ABSENT}, "refresh must not resurrect a lapsed marker"


def test_sql_store_without_its_table_gives_unknown(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    assert SqlInflight(engine).verdicts(["a"]) == {"a": Verdict.UNKNOWN}


def test_open_inflight_store_picks_redis_with_a_url_and_sql_without(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert isinstance(open_inflight_store("redis://127.0.0.1:1/0", engine), RedisInflight)
    assert isinstance(open_inflight_store(None, engine), SqlInflight)


@pytest.mark.parametrize(("verdict", "age", "held"), [
    (Verdict.ALIVE, 10 * DEFAULT_MAX_AGE_SECONDS, True),
    (Verdict.ABSENT, 61.0, False),
    (Verdict.UNKNOWN, DEFAULT_MAX_AGE_SECONDS - 1, True),
    (Verdict.UNKNOWN, DEFAULT_MAX_AGE_SECONDS, False),
])
def test_withholds_follows_trinitys_rule(verdict: Verdict, age: float, held: bool) -> None:
    """alive always holds; absent never; unknown holds only while the row is younger than the bound."""
    assert withholds(verdict, age) is held


def test_the_bound_on_unknown_is_configurable() -> None:
    assert withholds(Verdict.UNKNOWN, 500.0, max_age_seconds=600.0) is True
    assert withholds(Verdict.UNKNOWN, 700.0, max_age_seconds=600.0) is False
    assert DEFAULT_MAX_AGE_SECONDS == 10_920
