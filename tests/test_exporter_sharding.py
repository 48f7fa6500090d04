"""Sharding the exporter: a stable owner per agent, and N shards that together publish every
execution exactly once, each reading only its agents' rows and polling only its agents."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from exec_watchdog.common.flags import ConfigError
from exec_watchdog.exporter.gather import Gatherer, poll_client
from exec_watchdog.exporter.settings import _shard
from exec_watchdog.exporter.sharding import Shard, jump_hash, parse_shard, shard_of
from exec_watchdog.platform_access.schema import schedule_executions
from exec_watchdog.platform_access.slots import SqlSlots
from exec_watchdog.simulated_platform.agent_server import AgentServer, serve_agents
from exec_watchdog.testbed.platform_rows import insert_agent, insert_execution

SECRET = "sharding-test-secret"
ROOT = Path(__file__).resolve().parents[1]
AGENTS = [f"agent-{i:03d}" for i in range(12)]


def test_an_agent_belongs_to_the_same_shard_in_every_process() -> None:
    """The owner comes from SHA-256, not hash(): another interpreter with another hash seed agrees."""
    names = [*AGENTS, "a.b_c-d", "x" * 63]
    here = [shard_of(n, 4) for n in names]
    code = ("import sys; from exec_watchdog.exporter.sharding import shard_of; "
            f"print([shard_of(n, 4) for n in {names!r}])")
    for seed in ("1", "12345"):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        assert out.strip() == str(here)


def test_every_agent_has_exactly_one_shard_and_shards_are_balanced() -> None:
    names = [f"agent-{i}" for i in range(5000)]
    for count in (1, 2, 3, 4, 7):
        shards = [Shard(k, count) for k in range(count)]
        owners = [[s.index for s in shards if s.owns(n)] for n in names]
        assert all(len(o) == 1 for o in owners)
        sizes = Counter(o[0] for o in owners)
        assert set(sizes) == set(range(count))
        assert max(sizes.values()) < 1.15 * len(names) / count < 1.15 * 1.15 * min(sizes.values())


def test_adding_a_shard_moves_only_its_share_of_agents() -> None:
    names = [f"agent-{i}" for i in range(5000)]
    for count in (2, 3, 4):
        moved = sum(shard_of(n, count) != shard_of(n, count + 1) for n in names)
        # Jump hashing moves 1/(N+1) of the keys, all of them to the new shard.
        assert abs(moved / len(names) - 1 / (count + 1)) < 0.03
        assert all(shard_of(n, count + 1) == count for n in names if shard_of(n, count) != shard_of(n, count + 1))


def test_jump_hash_stays_in_range() -> None:
    for key in (0, 1, 2**63, 2**64 - 1, 123456789):
        assert jump_hash(key, 1) == 0
        assert 0 <= jump_hash(key, 1000) < 1000


@pytest.mark.parametrize(("text", "shard"), [
    ("0/4", Shard(0, 4)), ("3/4", Shard(3, 4)), (" 1/2 ", Shard(1, 2)),
    ("exec-watchdog-exporter-2/4", Shard(2, 4)), ("exporter-0/1", Shard(0, 1)),
])
def test_shard_flag_takes_k_of_n_or_a_pod_name(text: str, shard: Shard) -> None:
    assert parse_shard(text) == shard
    assert _shard(text) == shard


@pytest.mark.parametrize("text", ["4/4", "-1/4", "1/0", "a/4", "2", "2/", "/4", "exporter/4", "1/4/4", "0/2000"])
def test_a_bad_shard_is_a_clear_error(text: str) -> None:
    with pytest.raises(ConfigError, match="--shard"):
        _shard(text)


def test_no_shard_means_the_whole_fleet() -> None:
    assert _shard(None) is None and _shard("") is None


@pytest.fixture
async def agents() -> AsyncIterator[AgentServer]:
    server = await serve_agents(AGENTS, SECRET)
    try:
        yield server
    finally:
        await server.stop()


async def test_three_shards_publish_every_execution_exactly_once(platform: sa.Engine, agents: AgentServer) -> None:
    """Each shard reads only its agents' rows (a bad row of another shard's agent is not even seen),
    polls only its agents, and the three snapshots together hold every execution once."""
    with platform.begin() as c:
        for i, agent in enumerate(AGENTS):
            insert_agent(c, agent)
            for n in range(3):
                insert_execution(c, f"e-{i}-{n}", agent, age_seconds=100)
        insert_execution(c, "no-agent", "", age_seconds=100)
        insert_agent(c, "idle-agent")  # no runs: still polled, by its own shard
    for i, agent in enumerate(AGENTS):
        await agents.registry(agent).start(f"e-{i}-0", 60)
    bad_owner = AGENTS[5]
    with platform.begin() as c:  # one unreadable row, owned by one shard
        c.execute(sa.update(schedule_executions).where(schedule_executions.c.id == "e-5-2")
                  .values(started_at="not a time"))

    everyone = sorted(f"e-{i}-{n}" for i in range(len(AGENTS)) for n in range(3) if (i, n) != (5, 2))
    seen: Counter[str] = Counter()
    polled: Counter[str] = Counter()
    invalid = 0
    client = poll_client(agents.url_template, SECRET, timeout=5.0, concurrency=10)
    try:
        for k in range(3):
            shard = Shard(k, 3)
            snapshot = await Gatherer(platform, client, SqlSlots(platform), shard=shard).gather()
            assert snapshot.database_up
            assert all(shard.owns(e.agent) for e in snapshot.executions)
            assert {a.name for a in snapshot.agents} == {a for a in [*AGENTS, "idle-agent"] if shard.owns(a)}
            assert {agent for agent, _ in snapshot.poll_errors} == {a.name for a in snapshot.agents}
            seen.update(e.execution_id for e in snapshot.executions)
            polled.update(a.name for a in snapshot.agents)
            own_bad = int(shard.owns(bad_owner)) + int(k == 0)  # shard 0 counts the row without an agent
            assert snapshot.invalid_rows == own_bad
            invalid += snapshot.invalid_rows or 0
            for e in snapshot.executions:
                assert e.agent_known == e.execution_id.endswith("-0")
    finally:
        await client.aclose()
    assert sorted(seen) == everyone and set(seen.values()) == {1}
    assert sorted(polled) == sorted([*AGENTS, "idle-agent"]) and set(polled.values()) == {1}
    assert invalid == 2


async def test_one_shard_of_one_is_the_whole_fleet(platform: sa.Engine, agents: AgentServer,
                                                   ) -> None:
    with platform.begin() as c:
        for i, agent in enumerate(AGENTS[:4]):
            insert_execution(c, f"e-{i}", agent, age_seconds=10)
    client = poll_client(agents.url_template, SECRET, timeout=5.0, concurrency=10)
    try:
        whole: Callable[[Shard | None], Gatherer] = lambda s: Gatherer(platform, client, shard=s)  # noqa: E731
        a, b = await whole(None).gather(), await whole(Shard(0, 1)).gather()
    finally:
        await client.aclose()
    assert sorted(e.execution_id for e in a.executions) == sorted(e.execution_id for e in b.executions) == [
        "e-0", "e-1", "e-2", "e-3"]
