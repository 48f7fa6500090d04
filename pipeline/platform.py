"""The simulated platform the pipeline watches: database, agents running real processes, capacity
slots and a scheduler, in the caller's event loop; and when each fault happened.

The moment of a fault is what recovery time is measured from: a lost report when the process
ended, an agent restart when the registry was wiped, a hung run when its runtime crossed the
timeout.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from exec_watchdog.platform_access.database import create_engine, create_platform_tables
from exec_watchdog.platform_access.inflight import open_inflight_store
from exec_watchdog.platform_access.slots import SlotStore, open_slot_store, slot_metadata
from exec_watchdog.platform_access.timestamps import utcnow
from exec_watchdog.remediator import audit
from exec_watchdog.simulated_platform.agent_server import AgentServer, serve_agents
from exec_watchdog.simulated_platform.process_registry import RegistryConfig
from exec_watchdog.simulated_platform.scheduler import Scheduler, Started

EventCallback = Callable[[str, Started, str], None]
AgentCallback = Callable[[str, str, int], None]  # (restarted|down|up|gone|partitioned|healed, agent, forgotten)


@dataclass(frozen=True)
class PlatformOptions:
    database_url: str
    agents: int = 5
    agent_secret: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)
    redis_url: str | None = None
    timeout_seconds: int = 15  # the simulated schedules' timeout
    # agent_ownership.execution_timeout_seconds: Trinity's stale sweep fails an unlisted run this
    # long + its grace after the start (Trinity's default 3600; the demo shortens it to show it).
    agent_timeout_seconds: int = 3600
    completed_window: float = 5.0  # how long an agent lists a finished run (Trinity: 300 s)
    late_report_seconds: float = 2.0  # must stay below completed_window, or a late report looks lost
    hold_seconds: float = 8.0  # how long an ``inflight`` run waits in the "backend" before its agent gets it
    # In-flight markers: written for dispatches older than marker_grace, refreshed every marker_tick.
    # Trinity's 5 s and 15 s sit well inside its 60 s orphan minimum; the fast profile's is 3 s.
    marker_grace: float = 0.5
    marker_tick: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.agents <= 1000:
            raise ValueError("agents must be from 1 to 1000")
        if self.timeout_seconds < 1:
            raise ValueError("timeout_seconds must be at least 1")
        if self.agent_timeout_seconds < 1:
            raise ValueError("agent_timeout_seconds must be at least 1")
        if not 0 <= self.late_report_seconds < self.completed_window:
            raise ValueError(f"late reports ({self.late_report_seconds:g} s) must arrive within the agent's "
                             f"recently-completed window ({self.completed_window:g} s)")

    @property
    def agent_names(self) -> list[str]:
        return [f"agent-{i:03d}" for i in range(1, self.agents + 1)]


def ensure_database(url: str) -> sa.Engine:
    """An engine on ``url``; Trinity's tables are created only in a database that has none.

    The remediator's own tables are created here too, before any replica starts: replicas that
    start together would otherwise race to create them.
    """
    engine = create_engine(url)
    if "schedule_executions" not in sa.inspect(engine).get_table_names():
        create_platform_tables(engine, slot_metadata)
    audit.create_tables(engine)
    return engine


class FaultClock(Scheduler):
    """The scheduler, remembering when each execution's fault happened."""

    def __init__(self, engine: sa.Engine, slots: SlotStore, agents: AgentServer, *,
                 on_event: EventCallback | None = None, **options: Any) -> None:
        """``options`` are the :class:`Scheduler`'s (timeout, late reports, in-flight markers)."""
        self.fault_at: dict[str, datetime] = {}
        self.finished: set[str] = set()
        self.on_execution: EventCallback = on_event or (lambda kind, started, detail: None)
        self.on_agent: AgentCallback = lambda what, agent, forgotten: None
        super().__init__(engine, slots, agents, on_event=self._event, **options)

    def _event(self, kind: str, started: Started, detail: str) -> None:
        if kind in ("report_lost", "start_failed", "slot_leaked", "slot_expired"):
            self.fault_at.setdefault(started.execution_id, utcnow())
        if kind in ("report_lost", "start_failed", "completed", "report_too_late", "hang_ended"):
            self.finished.add(started.execution_id)
        if kind == "started" and started.fault == "no_session":
            self.fault_at[started.execution_id] = started.started_at
            self.finished.add(started.execution_id)
        if kind == "started" and started.fault == "hang":
            self.fault_at[started.execution_id] = started.started_at + timedelta(seconds=started.timeout_seconds)
        self.on_execution(kind, started, detail)

    def _forget_unfinished(self, agent: str) -> int:
        """The agent's runs die unreported: each is lost from this moment (a hung run is now an orphan).
        A dispatch still held in the backend is not on the agent yet, so it is not touched."""
        now = utcnow()
        forgotten = 0
        for execution_id, s in self.started.items():
            if s.agent == agent and execution_id not in self.finished and execution_id not in self.held:
                self.fault_at[execution_id] = min(self.fault_at.get(execution_id, now), now)
                self.finished.add(execution_id)
                forgotten += 1
        return forgotten

    def restart_agent(self, agent: str) -> None:
        forgotten = self._forget_unfinished(agent)
        super().restart_agent(agent)
        self.on_agent("restarted", agent, forgotten)

    def stop_agent(self, agent: str) -> None:
        super().stop_agent(agent)
        self.on_agent("down", agent, 0)

    def resume_agent(self, agent: str) -> None:
        super().resume_agent(agent)
        self.on_agent("up", agent, 0)

    def remove_agent(self, agent: str) -> None:
        forgotten = self._forget_unfinished(agent)
        super().remove_agent(agent)
        self.on_agent("gone", agent, forgotten)

    def partition(self) -> None:
        super().partition()
        self.on_agent("partitioned", "*", 0)

    def heal(self) -> None:
        super().heal()
        self.on_agent("healed", "*", 0)


class Platform:
    """Started with :meth:`start` in a running event loop; :meth:`stop` kills every process."""

    def __init__(self, options: PlatformOptions, engine: sa.Engine, slots: SlotStore, server: AgentServer,
                 scheduler: FaultClock) -> None:
        self.options = options
        self.engine = engine
        self.slots = slots
        self.server = server
        self.scheduler = scheduler

    @classmethod
    async def start(cls, options: PlatformOptions, on_event: EventCallback | None = None) -> Platform:
        engine = ensure_database(options.database_url)
        try:
            slots = open_slot_store(options.redis_url, engine)
            config = RegistryConfig(completed_window=options.completed_window)
            server = await serve_agents(options.agent_names, options.agent_secret, config=config)
        except BaseException:
            engine.dispose()
            raise
        # In-flight dispatch markers where the watchdog reads them: Redis as Trinity, else the table.
        scheduler = FaultClock(engine, slots, server, timeout_seconds=options.timeout_seconds,
                               late_report_seconds=options.late_report_seconds, on_event=on_event,
                               inflight=open_inflight_store(options.redis_url, engine),
                               hold_seconds=options.hold_seconds, marker_grace=options.marker_grace,
                               marker_tick=options.marker_tick, agent_timeout_seconds=options.agent_timeout_seconds)
        try:
            scheduler.prepare()
        except BaseException:
            await server.stop()
            engine.dispose()
            raise
        return cls(options, engine, slots, server, scheduler)

    @property
    def url_template(self) -> str:
        return self.server.url_template

    async def stop(self) -> None:
        try:
            with contextlib.suppress(Exception):
                await self.scheduler.drain()
            await self.server.stop()
        finally:
            self.engine.dispose()
