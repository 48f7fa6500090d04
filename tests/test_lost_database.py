"""A lost database connection: the action claims and the transition's commit.

Two remediator replicas (the real app, in process) reach a real PostgreSQL through a TCP relay
(``exec_watchdog.testbed.breakable_servers.TcpRelay``) that loses one reply at the worst moment
and then stays down for ``OUTAGE`` seconds; the agents are simulated agents running real
processes, the announcements go through a real Redis. The test plays Alertmanager: each
notification is delivered to both replicas, as an HA pair does, and a 5xx is retried every second,
each retry to the other replica. Without the relay, the claim rules on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.slots import slot_metadata
from exec_watchdog.platform_access.timestamps import utcnow
from exec_watchdog.remediator import action_claims, audit
from exec_watchdog.simulated_platform.agent_server import AgentServer
from exec_watchdog.testbed.announcements import Announcements
from exec_watchdog.testbed.breakable_servers import TcpRelay
from exec_watchdog.testbed.notifications import alert, notification
from exec_watchdog.testbed.platform_rows import insert_agent, insert_execution
from exec_watchdog.testbed.remediator_harness import Harness, remediator

pytestmark = pytest.mark.timeout(120)

OUTAGE = 5.0  # seconds the relay stays down after the lost reply
AFTER_FAULT = 15.0  # every run is recovered this long after the database is back, at most
RETRY_EVERY = 1.0  # "Alertmanager" retries a 5xx this often


@dataclass
class Pair:
    relay: TcpRelay
    replicas: list[Harness]
    direct: sa.Engine  # the test's own view of the database, not through the relay
    announcements: Announcements

    def add_runs(self, agent: str, ids: list[str], age_seconds: float) -> None:
        with self.direct.begin() as conn:
            for execution_id in ids:
                insert_execution(conn, execution_id, agent, age_seconds=age_seconds)
        for execution_id in ids:
            self.replicas[0].slots.acquire(agent, execution_id, utcnow(), "msg", 3600)

    def count(self, table: sa.Table, execution_id: str, **where: str) -> int:
        with self.direct.connect() as conn:
            query = sa.select(sa.func.count()).select_from(table).where(table.c.execution_id == execution_id,
                                                                         *(table.c[k] == v for k, v in where.items()))
            return int(conn.execute(query).scalar_one())

    def decisions(self, execution_id: str) -> list[tuple[str, str]]:
        with self.direct.connect() as conn:
            return [(o, r) for o, r in conn.execute(
                sa.select(audit.decisions.c.outcome, audit.decisions.c.reason)
                .where(audit.decisions.c.execution_id == execution_id).order_by(audit.decisions.c.id))]

    async def deliver(self, body: dict[str, Any], first: int, deadline: float, then: int | None = None) -> list[int]:
        """One Alertmanager of the pair: deliver, retry each 5xx on the other replica (or always on
        replica ``then``)."""
        codes: list[int] = []
        turn = first
        while True:
            response = await self.replicas[turn % 2 if then is None or not codes else then].post(body)
            codes.append(response.status_code)
            if response.status_code < 500:
                return codes
            assert time.monotonic() < deadline, f"still refused after {len(codes)} deliveries: {response.text}"
            await asyncio.sleep(RETRY_EVERY)
            turn += 1


@contextlib.asynccontextmanager
async def behind_relay(postgres_url: str, redis_url: str, agents: AgentServer, replicas: int = 2,
                       **settings: Any) -> AsyncIterator[Pair]:
    direct = db.create_engine(postgres_url)
    db.create_platform_tables(direct, slot_metadata)
    audit.create_tables(direct)
    with direct.begin() as conn:  # a1's runs time out after 60 s: its 125 s old rows are overdue
        insert_agent(conn, "a1", timeout_seconds=60)
    with TcpRelay(sa.make_url(postgres_url).port or 5432) as relay:
        url = relay.url_for(postgres_url)
        async with contextlib.AsyncExitStack() as stack:
            harnesses = [await stack.enter_async_context(remediator(url, redis_url, agents, replica=f"r{i + 1}",
                                                                    **settings)) for i in range(replicas)]
            announcements = Announcements(redis_url)
            try:
                yield Pair(relay, harnesses, direct, announcements)
            finally:
                announcements.close()
    direct.dispose()


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i:02d}-lostdb" for i in range(n)]


def assert_each_recovered_once(pair: Pair, agents: AgentServer, overdue: list[str], orphans: list[str]) -> None:
    """One transition (one recovered decision, one outbox row), one SIGINT, one slot release and one
    announcement per execution."""
    for execution_id in overdue + orphans:
        outcomes = [o for o, _ in pair.decisions(execution_id)]
        assert outcomes.count("recovered") == 1, (execution_id, pair.decisions(execution_id))
        assert pair.count(audit.recoveries, execution_id) == 1
        assert pair.announcements.count(execution_id) == 1, execution_id
    for execution_id in overdue:
        assert agents.registry("a1").sigints.get(execution_id) == 1, execution_id
        assert pair.replicas[0].row(execution_id).error.startswith("Execution auto-terminated after 2 minutes")
    for execution_id in orphans:
        assert pair.replicas[0].row(execution_id).status == "failed"
    assert pair.replicas[0].slots.held("a1") == set() and pair.replicas[0].slots.held("a2") == set()


# Where the connection is lost: right after a claim (the reply to its COMMIT), or right after the
# kills (the reply to the transition's UPDATE: the transaction never commits, the claims are held).
FAULTS = {"after_claim": (b"COMMIT", b"watchdog_action_claims"),
          "after_kill": (b"UPDATE schedule_executions", b"UPDATE schedule_executions")}


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_a_lost_connection_delays_each_recovery_by_the_outage_only(
        postgres_url: str, redis_url: str, redis_client: object, agents: AgentServer, fault: str) -> None:
    """The connection is lost (right after a claim, or after the kills) and the database is away 5 s
    while two replicas handle 6 orphaned and 6 overdue runs: every run is recovered within 15 s of
    the database coming back (not after a claim's lease), with one transition, SIGINT, slot release
    and announcement each."""
    async with behind_relay(postgres_url, redis_url, agents) as pair:
        overdue, orphans = ids("over", 6), ids("orphan", 6)
        pair.add_runs("a1", overdue, age_seconds=125)
        pair.add_runs("a2", orphans, age_seconds=120)
        for execution_id in overdue:
            await agents.registry("a1").start(execution_id, 600)
        body = notification(*(alert(e, "a1", "terminate_overdue") for e in overdue), *(alert(e, "a2") for e in orphans))
        pair.relay.lose_reply_after(*FAULTS[fault], OUTAGE)

        deadline = time.monotonic() + OUTAGE + 30
        await asyncio.gather(pair.deliver(body, 0, deadline), pair.deliver(body, 1, deadline))
        await asyncio.sleep(1.0)  # a late duplicate announcement would show now

        assert pair.relay.fired_at is not None and pair.relay.restarted_at is not None, "the fault never happened"
        delays = {e: pair.announcements.first_seen[e] - pair.relay.restarted_at
                  for e in overdue + orphans if e in pair.announcements.first_seen}
        assert sorted(delays) == sorted(overdue + orphans), "some runs were never announced"
        print(f"\n{fault}: recovered after the database came back: max {max(delays.values()):.1f} s, "
              f"median {statistics.median(delays.values()):.1f} s (outage {OUTAGE:g} s)")
        assert max(delays.values()) <= AFTER_FAULT, delays
        assert_each_recovered_once(pair, agents, overdue, orphans)
        if fault == "after_kill":  # the retry took the claim over and made the transition, no second SIGINT
            for execution_id in overdue:
                recovered = [r for o, r in pair.decisions(execution_id) if o == "recovered"]
                assert "terminated by an earlier attempt whose delivery failed" in recovered[0]


async def test_a_transition_whose_commit_reply_is_lost_is_read_back_and_recorded_as_recovered(
        postgres_url: str, redis_url: str, redis_client: object, agents: AgentServer) -> None:
    """The transition commits, its reply is lost and the database is away 5 s: the delivery reads
    back what happened and records it as it is ("recovered"), and announces on the spot, not
    through the background sweep (slowed here to 10 minutes)."""
    async with behind_relay(postgres_url, redis_url, agents, sweep_interval_seconds=600) as pair:
        overdue, orphans = ids("over", 1), ids("orphan", 1)
        pair.add_runs("a1", overdue, age_seconds=125)
        pair.add_runs("a2", orphans, age_seconds=120)
        await agents.registry("a1").start(overdue[0], 600)
        body = notification(alert(overdue[0], "a1", "terminate_overdue"), alert(orphans[0], "a2"))
        pair.relay.lose_reply_after(b"COMMIT", b"UPDATE schedule_executions", OUTAGE)

        response = await pair.replicas[0].post(body)
        answered = time.monotonic()

        assert pair.relay.fired_at is not None, "the fault never happened"
        assert response.status_code == 200, response.text
        for verdict in response.json()["alerts"]:
            assert verdict["outcome"] == "recovered", verdict
            assert "the commit's reply was lost, read back: status='failed'" in verdict["reason"]
        for execution_id in overdue + orphans:
            assert [o for o, _ in pair.decisions(execution_id)] == ["recovered"]
            assert pair.announcements.first_seen.get(execution_id, answered + 1) <= answered + 0.5, \
                "announced by the delivery itself"
            assert pair.count(audit.recoveries, execution_id, claimed_by="r1") == 1
        await pair.deliver(body, 1, time.monotonic() + 10)  # the pair's other delivery: nothing doubles
        await asyncio.sleep(0.5)
        assert_each_recovered_once(pair, agents, overdue, orphans)


async def test_a_claim_left_by_a_replica_that_died_before_its_terminate_blocks_one_lease_at_most(
        database_url: str, redis_url: str, redis_client: object, agents: AgentServer) -> None:
    """A replica took the claim and died before sending the terminate: deliveries are answered 503
    while its lease runs (Alertmanager retries), then the run is terminated once and recovered."""
    lease = 4.0  # the shortest the app allows with a 2 s terminate deadline (app._with_claim_lease)
    async with remediator(database_url, redis_url, agents, replica="r1", action_claim_ttl_seconds=1.0,
                          agent_terminate_timeout=2.0) as h:
        with h.engine.begin() as conn:
            insert_agent(conn, "a1", timeout_seconds=60)
        h.add_execution("e1", "a1", age_seconds=125)
        await agents.registry("a1").start("e1", 600)
        assert action_claims.take(h.engine, "e1", "r0:died", lease) == action_claims.Held(predecessor_sent=False)
        taken = time.monotonic()
        body = notification(alert("e1", "a1", "terminate_overdue"))

        codes = []
        while (response := await h.post(body)).status_code == 503:
            codes.append(503)
            assert "holds the action claim" in response.json()["alerts"][0]["reason"]
            assert time.monotonic() - taken < lease + 5
            await asyncio.sleep(0.3)

        assert codes, "the held claim was not respected"
        assert response.json()["alerts"][0]["outcome"] == "recovered"
        assert lease - 0.5 <= time.monotonic() - taken <= lease + 3
        assert agents.registry("a1").sigints == {"e1": 1}
        with h.engine.connect() as conn:  # the claim ended with the delivery
            assert conn.execute(sa.select(action_claims.action_claims)).all() == []


def test_claim_rules_reentry_release_and_an_earlier_terminate(engine: sa.Engine) -> None:
    """The claim's rules: a holder takes its own claim back, others wait for release or lapse; a
    release keeps the fact that a terminate was sent, and confirming a claim taken over fails."""
    audit.create_tables(engine)
    assert action_claims.take(engine, "e1", "r1:a", 60) == action_claims.Held(False)
    assert action_claims.take(engine, "e1", "r2:b", 60) is None
    assert action_claims.take(engine, "e1", "r1:a", 60) == action_claims.Held(False)  # its own retry
    assert action_claims.confirm(engine, "e1", "r1:a", 60)
    action_claims.release(engine, "e1", "r1:a")
    assert action_claims.take(engine, "e1", "r2:b", 60) == action_claims.Held(predecessor_sent=True)
    assert not action_claims.confirm(engine, "e1", "r1:a", 60)  # taken over: r1 must not terminate
    action_claims.drop(engine, "e1", "r2:b")
    assert action_claims.take(engine, "e1", "r1:a", 60) == action_claims.Held(False)
    assert action_claims.take(engine, "e2", "r1:a", -1) == action_claims.Held(False)  # already lapsed
    assert action_claims.take(engine, "e2", "r2:b", 60) == action_claims.Held(False)


async def test_a_retry_on_the_other_replica_takes_over_the_claim_the_first_could_not_release(
        postgres_url: str, redis_url: str, redis_client: object, agents: AgentServer) -> None:
    """Replica r1 kills an overdue run, then loses the database before its transition; every retry
    goes to r2 only. r1 releases its claim as soon as the database answers it again (its sweeper),
    so r2 makes the transition within a sweep interval of the fault's end, without a second SIGINT."""
    async with behind_relay(postgres_url, redis_url, agents, sweep_interval_seconds=2.0) as pair:
        overdue = ids("over", 2)
        pair.add_runs("a1", overdue, age_seconds=125)
        for execution_id in overdue:
            await agents.registry("a1").start(execution_id, 600)
        body = notification(*(alert(e, "a1", "terminate_overdue") for e in overdue))
        pair.relay.lose_reply_after(*FAULTS["after_kill"], OUTAGE)

        codes = await pair.deliver(body, 0, time.monotonic() + OUTAGE + 20, then=1)
        await asyncio.sleep(0.5)

        assert pair.relay.restarted_at is not None and codes[0] == 503 and codes[-1] == 200, codes
        delays = [pair.announcements.first_seen[e] - pair.relay.restarted_at for e in overdue]
        print(f"\nretries on the other replica only: recovered {max(delays):.1f} s after the database came back")
        assert max(delays) <= 2.0 + 2 * RETRY_EVERY + 1, delays
        for execution_id in overdue:
            assert [o for o, _ in pair.decisions(execution_id) if o == "recovered"] == ["recovered"]
            assert pair.count(audit.decisions, execution_id, outcome="recovered", replica="r2") == 1
        assert_each_recovered_once(pair, agents, overdue, [])


async def test_a_lost_commit_the_database_does_not_answer_for_is_retried_and_finished_once(
        postgres_url: str, redis_url: str, redis_client: object, agents: AgentServer) -> None:
    """The commit's reply is lost and the database stays away longer than the read-back window
    (1 s here): the delivery answers 503 saying the outcome is unknown; once the database is back
    the replica reads it back, records "recovered" and announces (once, without waiting for the
    outbox claim to expire), and the retry changes nothing."""
    async with behind_relay(postgres_url, redis_url, agents, replicas=1, commit_readback_seconds=1.0,
                            sweep_interval_seconds=1.0) as pair:
        orphans = ids("orphan", 1)
        pair.add_runs("a2", orphans, age_seconds=120)
        body = notification(alert(orphans[0], "a2"))
        pair.relay.lose_reply_after(b"COMMIT", b"UPDATE schedule_executions", OUTAGE)

        response = await pair.replicas[0].post(body)

        assert response.status_code == 503, response.text
        assert "commit outcome unknown" in response.json()["alerts"][0]["reason"]
        while (response := await pair.replicas[0].post(body)).status_code == 503:
            await asyncio.sleep(RETRY_EVERY)
        back = time.monotonic()
        assert response.json()["alerts"][0]["outcome"] == "skipped"  # it had committed
        outcomes = [o for o, _ in pair.decisions(orphans[0])]
        # (the 503s could not be written to the audit trail: the database was away)
        assert outcomes == ["recovered", "skipped"], outcomes
        assert "(read back later)" in pair.decisions(orphans[0])[0][1]
        await asyncio.sleep(1.0)  # a late duplicate would show now
        assert pair.announcements.count(orphans[0]) == 1
        assert pair.announcements.first_seen[orphans[0]] <= back + 1.0  # not the outbox claim's 30 s later
        assert pair.count(audit.recoveries, orphans[0]) == 1
        assert pair.replicas[0].slots.held("a2") == set()
