"""The exporter against the simulated platform: real agent servers, real processes, real databases.

Each test builds a fresh ``CollectorRegistry`` around a :class:`Gatherer` and asserts on the
samples Prometheus would scrape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from exec_watchdog.common.contract import ExporterMetric as m
from exec_watchdog.exporter.gather import Gatherer, poll_client
from exec_watchdog.exporter.snapshot import Snapshot
from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.agent_client import AgentClient
from exec_watchdog.platform_access.schema import schedule_executions
from exec_watchdog.platform_access.slots import RedisSlots, SlotStore, SqlSlots, slot_metadata
from exec_watchdog.platform_access.timestamps import format_utc
from exec_watchdog.simulated_platform.agent_server import AgentServer, serve_agents
from exec_watchdog.simulated_platform.process_registry import RegistryConfig
from exec_watchdog.testbed.platform_rows import insert_agent, insert_execution, insert_schedule
from tests.exposition_oracle import ExecWatchdogCollector

SECRET = "exporter-test-secret"
NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
async def agents() -> AsyncIterator[AgentServer]:
    server = await serve_agents(["a1", "a2", "a3"], SECRET)
    try:
        yield server
    finally:
        await server.stop()


class Scraper:
    """A gatherer, a fresh registry around it, and the last snapshot it produced."""

    def __init__(self, gatherer: Gatherer) -> None:
        self.gatherer = gatherer
        self.snapshot: Snapshot | None = None
        self.registry = CollectorRegistry()
        self.registry.register(ExecWatchdogCollector(self._current))

    def _current(self) -> Snapshot:
        assert self.snapshot is not None, "scrape() first"
        return self.snapshot

    async def scrape(self) -> Snapshot:
        self.snapshot = await self.gatherer.gather()
        return self.snapshot

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def series(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Every sample of one name, keyed by its sorted labels."""
        return {tuple(sorted(s.labels.items())): s.value
                for family in self.registry.collect() for s in family.samples if s.name == name}


@pytest.fixture
async def make_scraper(platform: sa.Engine) -> AsyncIterator[Callable[..., Scraper]]:
    clients: list[AgentClient] = []

    def make(url_template: str, *, secret: str = SECRET, slots: SlotStore | None = None,
             **options: Any) -> Scraper:
        client = poll_client(url_template, secret, timeout=5.0, concurrency=options.get("poll_concurrency", 50))
        clients.append(client)
        options.setdefault("clock", lambda: NOW)
        return Scraper(Gatherer(platform, client, slots if slots is not None else SqlSlots(platform), **options))

    yield make
    for client in clients:
        await client.aclose()


async def test_known_executions_give_exact_samples(platform: sa.Engine, agents: AgentServer,
                                                   make_scraper: Callable[..., Scraper]) -> None:
    with platform.begin() as c:
        insert_agent(c, "a1", timeout_seconds=900, max_parallel=5)
        insert_schedule(c, "nightly", "a1", timeout_seconds=None)
        insert_execution(c, "e-known", "a1", schedule_id="nightly", age_seconds=125.5, now=NOW)
        insert_execution(c, "e-lost", "a1", age_seconds=7200, now=NOW)
    await agents.registry("a1").start("e-known", 60)
    scraper = make_scraper(agents.url_template)
    snapshot = await scraper.scrape()

    known = {"agent": "a1", "execution_id": "e-known", "schedule_id": "nightly"}
    lost = {"agent": "a1", "execution_id": "e-lost", "schedule_id": "__manual__"}
    assert scraper.value(m.EXECUTION_RUNTIME, **known) == 125.5
    assert scraper.value(m.EXECUTION_TIMEOUT, **known) == 900
    assert scraper.value(m.EXECUTION_AGENT_KNOWN, **known) == 1
    assert scraper.value(m.EXECUTION_RUNTIME, **lost) == 7200
    assert scraper.value(m.EXECUTION_TIMEOUT, **lost) == 900
    assert scraper.value(m.EXECUTION_AGENT_KNOWN, **lost) == 0
    assert scraper.value(m.AGENT_UP, agent="a1") == 1
    assert scraper.value(m.AGENT_REGISTRY_EXECUTIONS, agent="a1", state="running") == 1
    assert scraper.value(m.AGENT_REGISTRY_EXECUTIONS, agent="a1", state="pending") == 0
    assert scraper.value(m.AGENT_REGISTRY_EXECUTIONS, agent="a1", state="recently_completed") == 0
    assert scraper.value(m.AGENT_SLOTS_LIMIT, agent="a1") == 5
    assert scraper.value(m.AGENT_SLOTS_USED, agent="a1") == 0
    assert scraper.value(m.DATABASE_UP) == 1
    assert scraper.value(m.INVALID_ROWS) == 0
    assert scraper.value(m.BUILD_INFO, version=snapshot.version) == 1
    assert 0 < (scraper.value(m.SCRAPE_DURATION) or 0) < 5
    assert scraper.value(m.AGENT_POLL_ERRORS, agent="a1", reason="timeout") == 0
    # Exactly these series, nothing left over from anything else.
    assert len(scraper.series(m.EXECUTION_RUNTIME)) == 2
    assert set(scraper.series(m.AGENT_UP)) == {(("agent", "a1"),)}


async def test_ended_executions_vanish_at_the_next_scrape(platform: sa.Engine, agents: AgentServer,
                                                          make_scraper: Callable[..., Scraper]) -> None:
    with platform.begin() as c:
        insert_execution(c, "e1", "a1", now=NOW)
        insert_execution(c, "e2", "a1", now=NOW)
    scraper = make_scraper(agents.url_template)
    await scraper.scrape()
    assert scraper.value(m.EXECUTION_RUNTIME, agent="a1", execution_id="e1", schedule_id="__manual__") == 0

    with platform.begin() as c:
        c.execute(sa.update(schedule_executions).where(schedule_executions.c.id == "e1")
                  .values(status="success"))
    await scraper.scrape()
    for name in (m.EXECUTION_RUNTIME, m.EXECUTION_TIMEOUT, m.EXECUTION_AGENT_KNOWN):
        assert scraper.value(name, agent="a1", execution_id="e1", schedule_id="__manual__") is None
        assert scraper.value(name, agent="a1", execution_id="e2", schedule_id="__manual__") is not None


async def test_unreachable_agent_is_down_and_its_executions_have_no_presence(
        platform: sa.Engine, agents: AgentServer, make_scraper: Callable[..., Scraper]) -> None:
    with platform.begin() as c:
        insert_execution(c, "e-up", "a1", now=NOW)
        insert_execution(c, "e-down", "a2", age_seconds=10, now=NOW)
    agents.agents["a2"].set_fault("down")
    scraper = make_scraper(agents.url_template)
    await scraper.scrape()

    down = {"agent": "a2", "execution_id": "e-down", "schedule_id": "__manual__"}
    assert scraper.value(m.AGENT_UP, agent="a2") == 0
    assert scraper.value(m.EXECUTION_AGENT_KNOWN, **down) is None
    assert scraper.value(m.EXECUTION_RUNTIME, **down) == 10  # still overdue-checkable from the database
    assert scraper.value(m.AGENT_REGISTRY_EXECUTIONS, agent="a2", state="running") is None
    assert scraper.value(m.AGENT_POLL_ERRORS, agent="a2", reason="bad_response") == 1  # 503
    assert scraper.value(m.AGENT_UP, agent="a1") == 1
    assert scraper.value(m.EXECUTION_AGENT_KNOWN, agent="a1", execution_id="e-up", schedule_id="__manual__") == 0


async def test_agent_with_nothing_listening_counts_as_unreachable(
        platform: sa.Engine, make_scraper: Callable[..., Scraper]) -> None:
    from exec_watchdog.testbed.servers import free_port

    with platform.begin() as c:
        insert_execution(c, "e1", "a1", now=NOW)
    scraper = make_scraper(f"http://127.0.0.1:{free_port()}/agents/{{agent}}")
    await scraper.scrape()
    await scraper.scrape()
    assert scraper.value(m.AGENT_UP, agent="a1") == 0
    assert scraper.value(m.EXECUTION_AGENT_KNOWN, agent="a1", execution_id="e1", schedule_id="__manual__") is None
    assert scraper.value(m.AGENT_POLL_ERRORS, agent="a1", reason="unreachable") == 2  # cumulative


async def test_hanging_agent_times_out_without_stalling_the_others(
        platform: sa.Engine, agents: AgentServer, make_scraper: Callable[..., Scraper]) -> None:
    with platform.begin() as c:
        insert_execution(c, "e-hung", "a1", now=NOW)
        insert_execution(c, "e-ok", "a2", now=NOW)
    await agents.registry("a2").start("e-ok", 60)
    agents.agents["a1"].set_fault("hang")
    scraper = make_scraper(agents.url_template, agent_timeout=0.3)
    started = time.perf_counter()
    await scraper.scrape()
    assert time.perf_counter() - started < 2
    assert scraper.value(m.AGENT_UP, agent="a1") == 0
    assert scraper.value(m.AGENT_POLL_ERRORS, agent="a1", reason="timeout") == 1
    assert scraper.value(m.EXECUTION_AGENT_KNOWN, agent="a1", execution_id="e-hung", schedule_id="__manual__") is None
    assert scraper.value(m.EXECUTION_AGENT_KNOWN, agent="a2", execution_id="e-ok", schedule_id="__manual__") == 1


async def test_scrape_deadline_bounds_a_scrape_whatever_the_agents_do(
        platform: sa.Engine, agents: AgentServer, make_scraper: Callable[..., Scraper]) -> None:
    with platform.begin() as c:
        for name in ("a1", "a2", "a3"):
            insert_agent(c, name)
    for agent in agents.agents.values():
        agent.set_fault("hang")
    # One poll at a time, each allowed 0.5 s: without the deadline this scrape would take 1.5 s.
    scraper = make_scraper(agents.url_template, agent_timeout=0.5, poll_concurrency=1, scrape_timeout=0.6)
    started = time.perf_counter()
    snapshot = await scraper.scrape()
    assert time.perf_counter() - started < 1.0
    assert [a.up for a in snapshot.agents] == [False, False, False]
    assert all(a.poll_error == "timeout" for a in snapshot.agents)


async def test_pending_and_recently_completed_count_as_known(
        platform: sa.Engine, make_scraper: Callable[..., Scraper]) -> None:
    server = await serve_agents(["slow"], SECRET, config=RegistryConfig(spawn_delay=60))
    quick = await serve_agents(["quick"], SECRET)
    try:
        with platform.begin() as c:
            insert_execution(c, "e-pending", "slow", now=NOW)
            insert_execution(c, "e-done", "quick", now=NOW)
        await server.registry("slow").start("e-pending", 60)
        await quick.registry("quick").start("e-done", 0)
        for _ in range(200):  # the zero-second process exits at once; wait until it is reaped
            if quick.registry("quick").recently_completed_ids():
                break
            await asyncio.sleep(0.01)

        slow_scraper = make_scraper(server.url_template)
        await slow_scraper.scrape()
        assert slow_scraper.value(m.EXECUTION_AGENT_KNOWN, agent="slow", execution_id="e-pending",
                                  schedule_id="__manual__") == 1
        assert slow_scraper.value(m.AGENT_REGISTRY_EXECUTIONS, agent="slow", state="pending") == 1

        quick_scraper = make_scraper(quick.url_template)
        await quick_scraper.scrape()
        assert quick_scraper.value(m.EXECUTION_AGENT_KNOWN, agent="quick", execution_id="e-done",
                                   schedule_id="__manual__") == 1
        assert quick_scraper.value(m.AGENT_REGISTRY_EXECUTIONS, agent="quick", state="recently_completed") == 1
        assert quick_scraper.value(m.AGENT_REGISTRY_EXECUTIONS, agent="quick", state="running") == 0
    finally:
        await server.stop()
        await quick.stop()


async def test_legacy_agent_without_pending_or_completed_lists_still_answers(
        platform: sa.Engine, make_scraper: Callable[..., Scraper]) -> None:
    server = await serve_agents(["old"], SECRET, legacy=["old"])
    try:
        with platform.begin() as c:
            insert_execution(c, "e-run", "old", now=NOW)
            insert_execution(c, "e-gone", "old", now=NOW)
        await server.registry("old").start("e-run", 60)
        scraper = make_scraper(server.url_template)
        await scraper.scrape()
        assert scraper.value(m.AGENT_UP, agent="old") == 1
        assert scraper.value(m.EXECUTION_AGENT_KNOWN, agent="old", execution_id="e-run", schedule_id="__manual__") == 1
        assert scraper.value(m.EXECUTION_AGENT_KNOWN, agent="old", execution_id="e-gone",
                             schedule_id="__manual__") == 0
    finally:
        await server.stop()


async def test_lease_rows_and_other_statuses_are_absent(platform: sa.Engine, agents: AgentServer,
                                                        make_scraper: Callable[..., Scraper]) -> None:
    with platform.begin() as c:
        insert_execution(c, "mine", "a1", now=NOW)
        insert_execution(c, "leased", "a1", now=NOW, lease_expires_at=format_utc(NOW))
        for status in ("queued", "success", "failed", "cancelled", "skipped", "pending_retry"):
            insert_execution(c, f"e-{status}", "a1", status=status, now=NOW)
    scraper = make_scraper(agents.url_template)
    await scraper.scrape()
    ids = {dict(labels)["execution_id"] for labels in scraper.series(m.EXECUTION_RUNTIME)}
    assert ids == {"mine"}
    assert {dict(labels)["execution_id"] for labels in scraper.series(m.EXECUTION_AGENT_KNOWN)} == {"mine"}


async def test_timeouts_follow_schedule_then_agent_then_default(
        platform: sa.Engine, agents: AgentServer, make_scraper: Callable[..., Scraper]) -> None:
    with platform.begin() as c:
        insert_agent(c, "a1", timeout_seconds=900)
        insert_agent(c, "a2", timeout_seconds=None)
        insert_schedule(c, "s-own", "a1", timeout_seconds=120)
        insert_schedule(c, "s-inherit", "a1", timeout_seconds=None)
        insert_schedule(c, "s-on-a2", "a2", timeout_seconds=None)
        insert_execution(c, "e-schedule", "a1", schedule_id="s-own", now=NOW)
        insert_execution(c, "e-agent", "a1", schedule_id="s-inherit", now=NOW)
        insert_execution(c, "e-default", "a2", schedule_id="s-on-a2", now=NOW)
        insert_execution(c, "e-no-ownership", "a3", now=NOW)
    scraper = make_scraper(agents.url_template)
    await scraper.scrape()
    timeouts = {dict(k)["execution_id"]: v for k, v in scraper.series(m.EXECUTION_TIMEOUT).items()}
    assert timeouts == {"e-schedule": 120, "e-agent": 900, "e-default": 3600, "e-no-ownership": 3600}


async def test_agents_come_from_running_rows_and_ownership(platform: sa.Engine, agents: AgentServer,
                                                           make_scraper: Callable[..., Scraper]) -> None:
    with platform.begin() as c:
        insert_agent(c, "a2", max_parallel=7)  # idle, but the platform knows it
        insert_execution(c, "e1", "a1", now=NOW)
        insert_execution(c, "e-old", "a3", status="success", now=NOW)  # a3 has nothing running
    scraper = make_scraper(agents.url_template)
    await scraper.scrape()
    assert set(scraper.series(m.AGENT_UP)) == {(("agent", "a1"),), (("agent", "a2"),)}
    assert scraper.value(m.AGENT_SLOTS_LIMIT, agent="a1") == 3  # no ownership row: Trinity's default
    assert scraper.value(m.AGENT_SLOTS_LIMIT, agent="a2") == 7


async def test_unsafe_agent_names_and_unreadable_rows_are_counted_not_polled(
        platform: sa.Engine, agents: AgentServer, make_scraper: Callable[..., Scraper]) -> None:
    with platform.begin() as c:
        insert_execution(c, "e-ok", "a1", now=NOW)
        insert_execution(c, "e-hostile", "../../admin", now=NOW)
        insert_execution(c, "e-spaces", "a b", now=NOW)
        insert_execution(c, "e-bad-time", "a1", started_at="yesterday-ish")
        insert_execution(c, "e-no-agent", None)  # type: ignore[arg-type]
        insert_agent(c, "evil/../x")
    scraper = make_scraper(agents.url_template)
    snapshot = await scraper.scrape()
    assert scraper.value(m.INVALID_ROWS) == 4
    assert [e.execution_id for e in snapshot.executions] == ["e-ok"]
    assert [a.name for a in snapshot.agents] == ["a1"]


async def test_wrong_secret_is_unauthorized_not_lost(platform: sa.Engine, agents: AgentServer,
                                                     make_scraper: Callable[..., Scraper]) -> None:
    with platform.begin() as c:
        insert_execution(c, "e1", "a1", now=NOW)
    scraper = make_scraper(agents.url_template, secret="not-the-secret")
    await scraper.scrape()
    assert scraper.value(m.AGENT_UP, agent="a1") == 0
    assert scraper.value(m.AGENT_POLL_ERRORS, agent="a1", reason="unauthorized") == 1
    assert scraper.value(m.EXECUTION_AGENT_KNOWN, agent="a1", execution_id="e1", schedule_id="__manual__") is None


async def test_garbage_answer_is_a_bad_response_not_lost(platform: sa.Engine, agents: AgentServer,
                                                         make_scraper: Callable[..., Scraper]) -> None:
    with platform.begin() as c:
        insert_execution(c, "e1", "a1", now=NOW)
    agents.agents["a1"].set_fault("garbage")
    scraper = make_scraper(agents.url_template)
    await scraper.scrape()
    assert scraper.value(m.AGENT_UP, agent="a1") == 0
    assert scraper.value(m.AGENT_POLL_ERRORS, agent="a1", reason="bad_response") == 1
    assert scraper.value(m.EXECUTION_AGENT_KNOWN, agent="a1", execution_id="e1", schedule_id="__manual__") is None


async def test_database_down_says_so_without_stale_numbers(
        platform: sa.Engine, agents: AgentServer, make_scraper: Callable[..., Scraper]) -> None:
    with platform.begin() as c:
        insert_execution(c, "e1", "a1", now=NOW)
    scraper = make_scraper(agents.url_template)
    await scraper.scrape()
    assert scraper.value(m.DATABASE_UP) == 1

    with platform.begin() as c:  # the query now fails, as with a database that went away
        c.execute(sa.text("ALTER TABLE schedule_executions RENAME TO schedule_executions_gone"))
    await scraper.scrape()
    assert scraper.value(m.DATABASE_UP) == 0
    assert scraper.series(m.EXECUTION_RUNTIME) == {}
    assert scraper.series(m.AGENT_UP) == {}
    assert scraper.value(m.INVALID_ROWS) is None
    assert scraper.value(m.AGENT_POLL_ERRORS, agent="a1", reason="timeout") == 0  # counters stay
    assert scraper.value(m.SCRAPE_DURATION) is not None


async def test_slots_used_come_from_redis(platform: sa.Engine, agents: AgentServer, redis_client: Any,
                                          make_scraper: Callable[..., Scraper]) -> None:
    slots = RedisSlots(redis_client)
    with platform.begin() as c:
        insert_execution(c, "e1", "a1", now=NOW)
        insert_execution(c, "e2", "a1", now=NOW)
        insert_agent(c, "a2")
    slots.acquire("a1", "e1", NOW, "m", 60)
    slots.acquire("a1", "e2", NOW, "m", 60)
    slots.acquire("elsewhere", "x", NOW, "m", 60)  # not an agent we watch
    scraper = make_scraper(agents.url_template, slots=slots)
    await scraper.scrape()
    assert scraper.series(m.AGENT_SLOTS_USED) == {(("agent", "a1"),): 2, (("agent", "a2"),): 0}


async def test_unreadable_slot_store_drops_only_slot_samples(
        platform: sa.Engine, agents: AgentServer, make_scraper: Callable[..., Scraper]) -> None:
    from exec_watchdog.testbed.servers import free_port

    with platform.begin() as c:
        insert_execution(c, "e1", "a1", now=NOW)
    dead_redis = RedisSlots.from_url(f"redis://127.0.0.1:{free_port()}/0")
    scraper = make_scraper(agents.url_template, slots=dead_redis)
    await scraper.scrape()
    assert scraper.series(m.AGENT_SLOTS_USED) == {}
    assert scraper.value(m.AGENT_SLOTS_LIMIT, agent="a1") == 3
    assert scraper.value(m.EXECUTION_AGENT_KNOWN, agent="a1", execution_id="e1", schedule_id="__manual__") == 0


async def test_concurrent_scrapes_share_one_gather(platform: sa.Engine, agents: AgentServer,
                                                   make_scraper: Callable[..., Scraper]) -> None:
    with platform.begin() as c:
        insert_execution(c, "e1", "a1", now=NOW)
    agents.agents["a1"].set_fault("down")
    scraper = make_scraper(agents.url_template)
    first, second = await asyncio.gather(scraper.gatherer.gather(), scraper.gatherer.gather())
    assert first is second
    assert first.poll_errors[("a1", "bad_response")] == 1  # polled once, not twice


def test_postgres_engine_reads_but_never_writes(postgres_url: str) -> None:
    from exec_watchdog.exporter.app import open_engine

    setup = db.create_engine(postgres_url)
    db.create_platform_tables(setup, slot_metadata)
    with setup.begin() as c:
        insert_execution(c, "e1", "a1", now=NOW)
    setup.dispose()
    engine = open_engine(postgres_url, timeout=2.0)
    try:
        with engine.connect() as c:
            rows, _ = db.running_executions(c)
            assert [r.id for r in rows] == ["e1"]
            with pytest.raises(sa.exc.InternalError, match="read-only transaction"):
                c.execute(sa.update(schedule_executions).values(status="failed"))
    finally:
        engine.dispose()


async def test_skipped_rows_without_completed_at_and_long_queued_rows_are_published_one_series_each(
        platform: sa.Engine, agents: AgentServer, make_scraper: Callable[..., Scraper]) -> None:
    """Only rows that can fire get a series: every unfinalized skipped row, queued rows past the publish bound."""
    def queued(waited: float) -> str:
        return format_utc(NOW - timedelta(seconds=waited))

    with platform.begin() as conn:
        insert_execution(conn, "s1", "a1", age_seconds=90, status="skipped", now=NOW)
        insert_execution(conn, "s-done", "a1", age_seconds=90, status="skipped", now=NOW, completed_at=format_utc(NOW))
        insert_execution(conn, "s-lease", "a1", status="skipped", now=NOW, lease_expires_at=format_utc(NOW))
        insert_execution(conn, "q-old", "a2", status="queued", now=NOW, queued_at=queued(50_000))
        insert_execution(conn, "q-young", "a2", status="queued", now=NOW, queued_at=queued(100))
        insert_execution(conn, "q-bad", "a2", status="queued", now=NOW, queued_at="not a time")
        insert_execution(conn, "f1", "a2", status="failed", now=NOW, queued_at=queued(90_000))
    scraper = make_scraper(agents.url_template)
    await scraper.scrape()
    assert scraper.series(m.SKIPPED_UNFINALIZED_AGE) == {
        (("agent", "a1"), ("execution_id", "s1"), ("schedule_id", "__manual__")): 90.0}
    assert scraper.series(m.QUEUED_AGE) == {
        (("agent", "a2"), ("execution_id", "q-old"), ("schedule_id", "__manual__")): 50_000.0}
    lower = make_scraper(agents.url_template, queued_publish_after_seconds=50)
    await lower.scrape()
    assert {dict(k)["execution_id"] for k in lower.series(m.QUEUED_AGE)} == {"q-old", "q-young"}


async def test_activities_started_past_the_publish_bound_are_published_one_series_each(
        platform: sa.Engine, agents: AgentServer, make_scraper: Callable[..., Scraper]) -> None:
    from exec_watchdog.testbed.platform_rows import insert_activity

    with platform.begin() as conn:
        insert_activity(conn, "old", "a1", "e1", age_seconds=4000, now=NOW)
        insert_activity(conn, "young", "a1", "e2", age_seconds=100, now=NOW)
        insert_activity(conn, "done", "a1", "e3", state="completed", age_seconds=9000, now=NOW)
    scraper = make_scraper(agents.url_template)
    await scraper.scrape()
    assert scraper.series(m.ACTIVITY_STARTED_AGE) == {
        (("activity_id", "old"), ("activity_type", "chat_start"), ("agent", "a1")): 4000.0}
async def test_first_unknown_time_is_kept_while_the_run_stays_unknown_and_cleared_when_known(
        platform: sa.Engine, agents: AgentServer, make_scraper: Callable[..., Scraper]) -> None:
    """The unknown-since gauge holds the first scrape that found the run unknown to its agent, stays
    at that moment on later scrapes, vanishes while the agent knows the run or cannot be asked, and
    is forgotten with the row."""
    clock = {"now": NOW}
    with platform.begin() as c:
        insert_execution(c, "e-lost", "a1", age_seconds=300, now=NOW)
        insert_execution(c, "e-known", "a1", age_seconds=300, now=NOW)
    await agents.registry("a1").start("e-known", 60)
    scraper = make_scraper(agents.url_template, clock=lambda: clock["now"])
    lost = {"agent": "a1", "execution_id": "e-lost", "schedule_id": "__manual__"}
    known = {"agent": "a1", "execution_id": "e-known", "schedule_id": "__manual__"}

    await scraper.scrape()
    assert scraper.value(m.EXECUTION_UNKNOWN_SINCE, **lost) == NOW.timestamp()
    assert scraper.value(m.EXECUTION_UNKNOWN_SINCE, **known) is None

    clock["now"] = NOW.replace(second=30)
    await scraper.scrape()
    assert scraper.value(m.EXECUTION_UNKNOWN_SINCE, **lost) == NOW.timestamp()  # the first one, not this one

    agents.agents["a1"].set_fault("down")
    await scraper.scrape()
    assert scraper.value(m.EXECUTION_UNKNOWN_SINCE, **lost) is None  # nobody knows meanwhile
    agents.agents["a1"].set_fault("none")
    await scraper.scrape()
    assert scraper.value(m.EXECUTION_UNKNOWN_SINCE, **lost) == NOW.timestamp()  # kept through the outage

    await agents.registry("a1").start("e-lost", 60)  # the agent knows it again: the moment is cleared
    await scraper.scrape()
    assert scraper.value(m.EXECUTION_UNKNOWN_SINCE, **lost) is None
    with platform.begin() as c:
        c.execute(sa.update(schedule_executions).where(schedule_executions.c.id == "e-lost").values(status="success"))
    await scraper.scrape()
    assert scraper.gatherer._unknown_since == {}  # nothing kept for rows no longer running
