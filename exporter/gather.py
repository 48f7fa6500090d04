"""One scrape's worth of facts: a single database read, then every agent polled concurrently.

The database is read once (running executions and ``agent_ownership`` on one connection). The
agents to poll are the distinct agents of those executions plus every ``agent_ownership`` row
(soft-deleted agents left out). Then, in one read, the in-flight markers of the runs an agent
answered without (or lists as recently completed), as Trinity's watchdog reads them.
Polls run concurrently under a semaphore, each with its own timeout, and the whole gather has a
deadline, so one slow or dead agent costs at most its timeout and never stalls the scrape. The
capacity slots are read at the same time as the polls.

With ``--shard K/N`` both reads and the polls cover only the shard's agents (exec_watchdog.exporter.sharding).

Concurrent scrapes (two Prometheus replicas, say) share one in-flight gather instead of doubling
the load on the database and the agents.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import redis
import sqlalchemy as sa
import structlog

from exec_watchdog.common.version import __version__
from exec_watchdog.exporter.sharding import Shard
from exec_watchdog.exporter.slot_facts import SlotRead, read_slots
from exec_watchdog.exporter.snapshot import POLL_ERROR_REASONS, AgentFacts, ExecutionFacts, RegistryCounts, Snapshot
from exec_watchdog.platform_access.agent_client import AgentClient, AgentResult, RunningEntry, RunningSnapshot
from exec_watchdog.platform_access.database import Execution, agents, running_executions
from exec_watchdog.platform_access.inflight import DEFAULT_MAX_AGE_SECONDS, InflightStore, Verdict, withholds
from exec_watchdog.platform_access.names import InvalidIdentifier
from exec_watchdog.platform_access.poll_transport import PollTransport
from exec_watchdog.platform_access.schema import DEFAULT_MAX_PARALLEL_TASKS
from exec_watchdog.platform_access.slots import SlotStore
from exec_watchdog.platform_access.timestamps import utcnow

log = structlog.get_logger("exporter")

# The agent client separates more failure kinds than the contract's `reason` label has; an agent
# that answers 404 or 5xx on /api/executions/running gave us nothing usable: a bad response.
_REASON = {
    "unreachable": "unreachable",
    "timeout": "timeout",
    "unauthorized": "unauthorized",
    "bad_response": "bad_response",
    "not_found": "bad_response",
    "server_error": "bad_response",
}


def poll_client(url_template: str, secret: str, *, timeout: float, concurrency: int) -> AgentClient:
    """The agent client the exporter polls with: the lean keep-alive transport, sized to the polls."""
    return AgentClient(url_template, secret, timeout=timeout, max_connections=concurrency,
                       transport=PollTransport(max_connections=concurrency))


@dataclass(frozen=True, slots=True)
class _DatabaseRead:
    now: datetime
    executions: list[Execution]
    unreadable: int
    limits: dict[str, int]


class Gatherer:
    """Produces a fresh :class:`Snapshot` per call of :meth:`gather`.

    The only state kept between scrapes is the cumulative poll-error counter (a counter must
    not reset) and what was last logged (to log changes, not every scrape).
    """

    def __init__(self, engine: sa.Engine, client: AgentClient, slots: SlotStore | None = None, *,
                 agent_timeout: float = 3.0, poll_concurrency: int = 50, database_timeout: float = 5.0,
                 scrape_timeout: float = 8.0, clock: Callable[[], datetime] = utcnow,
                 version: str = __version__, inflight: InflightStore | None = None,
                 inflight_max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS, shard: Shard | None = None) -> None:
        if poll_concurrency < 1:
            raise ValueError("poll concurrency must be at least 1")
        if min(agent_timeout, database_timeout, scrape_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        self._engine = engine
        self._client = client
        self._slots = slots
        self._markers = inflight
        self._inflight_max_age = inflight_max_age_seconds
        self._shard = shard  # None: the whole fleet
        self._agent_timeout = agent_timeout
        self._poll_concurrency = poll_concurrency
        self._database_timeout = database_timeout
        self._scrape_timeout = scrape_timeout
        self._clock = clock
        self._version = version
        self._poll_errors: dict[tuple[str, str], int] = {}
        self._inflight: asyncio.Future[Snapshot] | None = None
        self._last_logged: dict[str, object] = {}
        self._valid_names: dict[str, bool] = {}

    async def gather(self) -> Snapshot:
        """Gather now, or join the gather already in flight."""
        if self._inflight is None:
            task = asyncio.ensure_future(self._gather())
            self._inflight = task
            task.add_done_callback(self._clear_inflight)
        # shield: one scraper hanging up must not cancel the gather the others are waiting for.
        return await asyncio.shield(self._inflight)

    def _clear_inflight(self, task: asyncio.Future[Snapshot]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _gather(self) -> Snapshot:
        started = time.perf_counter()
        deadline = started + self._scrape_timeout
        try:
            read = await asyncio.wait_for(asyncio.to_thread(self._read_database),
                                          min(self._database_timeout, self._scrape_timeout))
        except (sa.exc.SQLAlchemyError, OSError, TimeoutError) as exc:
            self._log_change("database", "down", "database unreachable", error=_describe(exc))
            return Snapshot(database_up=False, duration_seconds=time.perf_counter() - started,
                            version=self._version, poll_errors=dict(self._poll_errors))
        self._log_change("database", "up", "database readable")
        read_done = time.perf_counter()

        watched: list[Execution] = []
        invalid = read.unreadable
        for execution in read.executions:
            if self._is_valid_agent(execution.agent_name):
                watched.append(execution)
            else:
                invalid += 1
        names = sorted({e.agent_name for e in watched} | {a for a in read.limits if self._is_valid_agent(a)})
        self._log_change("invalid_rows", invalid, "running rows that cannot be published", count=invalid)

        running_ids = frozenset(e.id for e in watched)
        slots_task = asyncio.ensure_future(asyncio.to_thread(self._read_slots, running_ids,
                                                             read.now.timestamp()))
        results = await self._poll_all(names, deadline)
        try:
            slot_read = await asyncio.wait_for(slots_task, max(0.0, deadline - time.perf_counter()))
        except TimeoutError:
            slot_read = None
            self._log_change("slots", "timeout", "capacity slots not read before the scrape deadline")
        slots_used = None if slot_read is None else slot_read.used

        agent_facts = []
        known_ids: dict[str, frozenset[str]] = {}
        completed_ids: dict[str, frozenset[str]] = {}
        for name in names:
            result = results[name]
            answer = result.value if result.answered else None
            if answer is not None:
                completed_ids[name] = answer.recently_completed_ids
                known_ids[name] = answer.running_ids | answer.pending_ids | answer.recently_completed_ids
                registry: RegistryCounts | None = RegistryCounts(
                    len(answer.executions), len(answer.pending_ids), len(answer.recently_completed_ids))
            else:
                registry = None
                self._poll_errors[(name, _REASON[result.kind])] += 1
            self._log_change(f"agent:{name}", result.kind, "agent poll", agent=name, detail=result.detail)
            agent_facts.append(AgentFacts(
                name=name, up=answer is not None, registry=registry,
                slots_used=None if slots_used is None else slots_used.get(name, 0),
                slots_limit=read.limits.get(name, DEFAULT_MAX_PARALLEL_TASKS),
                poll_error="" if answer is not None else result.kind,
            ))

        # Trinity reads the marker of every run its agent does not know or lists as recently completed.
        asked = [e for e in watched if e.agent_name in known_ids
                 and (e.id not in known_ids[e.agent_name] or e.id in completed_ids[e.agent_name])]
        verdicts = await self._inflight_verdicts([e.id for e in asked], deadline)
        executions = tuple(
            ExecutionFacts(
                agent=e.agent_name, execution_id=e.id, schedule_id=e.schedule_id,
                runtime_seconds=(read.now - e.started_at).total_seconds(), timeout_seconds=e.timeout_seconds,
                agent_known=(e.id in known_ids[e.agent_name]) if e.agent_name in known_ids else None,
                recently_completed=(e.id in completed_ids[e.agent_name]) if e.agent_name in completed_ids else None,
                dispatch_inflight=withholds(verdicts[e.id], (read.now - e.started_at).total_seconds(),
                                            self._inflight_max_age) if e.id in verdicts else None,
            )
            for e in watched
        )
        duration = time.perf_counter() - started
        log.debug("scrape gathered", executions=len(executions), agents=len(agent_facts),
                  agents_down=sum(not a.up for a in agent_facts), invalid_rows=invalid,
                  database_seconds=round(read_done - started, 4), seconds=round(duration, 4))
        return Snapshot(
            database_up=True, duration_seconds=duration, version=self._version,
            executions=executions, agents=tuple(agent_facts), invalid_rows=invalid,
            poll_errors=dict(self._poll_errors),
            slots=() if slot_read is None else slot_read.facts,
            slots_paused=None if slot_read is None else slot_read.paused,
        )

    def _read_database(self) -> _DatabaseRead:
        with self._engine.connect() as conn:
            executions, bad = running_executions(conn) if self._shard is None else self._shard.read_running(conn)
            limits = {a.name: a.max_parallel_tasks for a in agents(conn)
                      if self._shard is None or self._shard.owns(a.name)}
        return _DatabaseRead(self._clock(), executions, len(bad), limits)

    async def _inflight_verdicts(self, ids: list[str], deadline: float) -> dict[str, Verdict]:
        """One read of the markers; unknown for all when the store fails or is too slow."""
        if not ids:
            return {}
        if self._markers is None:
            return dict.fromkeys(ids, Verdict.ABSENT)  # nobody writes markers here
        store = self._markers
        try:
            found = await asyncio.wait_for(asyncio.to_thread(store.verdicts, ids),
                                           max(0.1, deadline - time.perf_counter()))
        except TimeoutError:
            self._log_change("inflight", "timeout", "in-flight markers not read before the scrape deadline")
            return dict.fromkeys(ids, Verdict.UNKNOWN)
        unreadable = all(v is Verdict.UNKNOWN for v in found.values())
        self._log_change("inflight", "down" if unreadable else "up", "in-flight markers unreadable: runs younger "
                         "than the in-flight bound count as in flight" if unreadable else "in-flight markers readable")
        return found

    def _read_slots(self, running_ids: frozenset[str], now: float) -> SlotRead | None:
        if self._slots is None:
            return None
        owns = None if self._shard is None else self._shard.owns
        try:
            return read_slots(self._slots, self._engine, running_ids, now, owns)
        except (redis.RedisError, sa.exc.SQLAlchemyError, OSError) as exc:
            self._log_change("slots", "down", "capacity slots unreadable", error=_describe(exc))
            return None

    def _is_valid_agent(self, name: str) -> bool:
        valid = self._valid_names.get(name)
        if valid is None:
            try:
                self._client.base_url(name)
                valid = True
            except InvalidIdentifier:
                valid = False
            if len(self._valid_names) < 100_000:  # bounded: agent names come from the database
                self._valid_names[name] = valid
        return valid

    async def _poll_all(self, names: Iterable[str], deadline: float) -> dict[str, AgentResult[RunningSnapshot]]:
        semaphore = asyncio.Semaphore(self._poll_concurrency)

        async def poll(agent: str) -> AgentResult[RunningSnapshot]:
            async with semaphore:
                try:
                    return _slim(await asyncio.wait_for(self._client.running(agent), self._agent_timeout))
                except TimeoutError:
                    return AgentResult("timeout", detail=f"no answer within {self._agent_timeout}s")
                except Exception as exc:  # a bug here must cost one agent's data, not the scrape
                    log.exception("agent poll failed", agent=agent)
                    return AgentResult("bad_response", detail=_describe(exc))

        tasks = {name: asyncio.ensure_future(poll(name)) for name in names}
        for name in tasks:
            for reason in POLL_ERROR_REASONS:
                self._poll_errors.setdefault((name, reason), 0)
        if not tasks:
            return {}
        _, late = await asyncio.wait(tasks.values(), timeout=max(0.0, deadline - time.perf_counter()))
        for task in late:
            task.cancel()
        results: dict[str, AgentResult[RunningSnapshot]] = {}
        for name, task in tasks.items():
            if task in late:
                results[name] = AgentResult("timeout", detail="not answered before the scrape deadline")
            else:
                results[name] = task.result()
        if late:
            await asyncio.gather(*late, return_exceptions=True)
        return results

    def _log_change(self, key: str, state: object, event: str, **fields: object) -> None:
        """Log a state once when it changes, not on every scrape."""
        if self._last_logged.get(key, _UNSET) == state:
            return
        first = key not in self._last_logged
        self._last_logged[key] = state
        if first and state in ("up", "answered", 0):
            return  # healthy from the start: nothing to say
        healthy = state in ("up", "answered", 0)
        (log.info if healthy else log.warning)(event, state=state, **fields)


_UNSET = object()


def _slim(result: AgentResult[RunningSnapshot]) -> AgentResult[RunningSnapshot]:
    """Keep only what a scrape publishes (ids): an agent's answer may carry megabytes of metadata,
    and a thousand answers are held until the scrape ends."""
    if not result.answered:
        return result
    answer = result.unwrap()
    return AgentResult("answered", RunningSnapshot(
        tuple(RunningEntry(e.execution_id, None, None) for e in answer.executions),
        answer.recently_completed_ids, answer.pending_ids))


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]
