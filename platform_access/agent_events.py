"""Trinity's system-emitted task-terminal events (its #1578), the part an outside process can do.

When a run ends, Trinity's backend emits ``agent.task.completed`` (status ``success``) or
``agent.task.failed`` (any other terminal status):

- nothing at all when the run was itself started by such an event (``triggered_by = 'event'``:
  the recursion break, so two subscribed agents cannot wake each other forever);
- nothing at all when no enabled subscription matches (``source_agent`` = the run's agent,
  ``event_type``): no row is written unless someone listens;
- else one ``agent_events`` row: id ``evt_`` + ``token_urlsafe(12)``, the payload JSON
  ``{execution_id, status, triggered_by, summary_or_error (<= 2000 chars), duration_ms, cost,
  fan_out_id, loop_id}``, ``subscriptions_triggered`` = the number matched, ``created_at``.

Trinity then wakes each subscriber through its own API with an admin token it signs with the
backend's ``SECRET_KEY``. We do not hold that key and do not take it: the row is written, the
wake is left to the backend (docs/trinity.md).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from exec_watchdog.platform_access.schema import agent_event_subscriptions, agent_events, schedule_executions
from exec_watchdog.platform_access.timestamps import format_utc

TASK_COMPLETED_EVENT = "agent.task.completed"
TASK_FAILED_EVENT = "agent.task.failed"
RESERVED_EVENT_TRIGGER = "event"  # triggered_by of a run an agent.task.* subscription started
SUMMARY_MAX_CHARS = 2000


def event_type_for(status: str) -> str:
    return TASK_COMPLETED_EVENT if status == "success" else TASK_FAILED_EVENT


@dataclass(frozen=True, slots=True)
class Terminal:
    """The row as our transition left it (read back in the same transaction)."""

    execution_id: str
    agent_name: str
    status: str
    error: str | None
    response: str | None
    duration_ms: int | None
    cost: float | None
    triggered_by: str | None
    fan_out_id: str | None
    loop_id: str | None


def read_terminal(conn: sa.Connection, execution_id: str) -> Terminal | None:
    return read_terminals(conn, [execution_id]).get(execution_id)


def read_terminals(conn: sa.Connection, execution_ids: Sequence[str], chunk: int = 500) -> dict[str, Terminal]:
    """The rows of many executions in one read each ``chunk``; a missing row is left out."""
    t = schedule_executions.c
    found = {}
    for start in range(0, len(execution_ids), chunk):
        for row in conn.execute(sa.select(t.id, t.agent_name, t.status, t.error, t.response, t.duration_ms, t.cost,
                                          t.triggered_by, t.fan_out_id, t.loop_id)
                                .where(t.id.in_(execution_ids[start:start + chunk]))):
            found[str(row.id)] = Terminal(str(row.id), str(row.agent_name or ""), str(row.status), row.error,
                                          row.response, row.duration_ms, row.cost, row.triggered_by, row.fan_out_id,
                                          row.loop_id)
    return found


def subscriptions_matching(conn: sa.Connection, agents: Iterable[str], chunk: int = 500) -> dict[tuple[str, str], int]:
    """Enabled subscriptions per (source agent, event type), for the agents given; pairs without one left out."""
    s = agent_event_subscriptions.c
    names, counts = sorted(set(agents)), {}
    for start in range(0, len(names), chunk):
        for source, event_type, count in conn.execute(
                sa.select(s.source_agent, s.event_type, sa.func.count()).select_from(agent_event_subscriptions)
                .where(s.source_agent.in_(names[start:start + chunk]), s.enabled == 1)
                .group_by(s.source_agent, s.event_type)):
            counts[(str(source), str(event_type))] = int(count)
    return counts


def emit_terminal_event(conn: sa.Connection, terminal: Terminal, now: datetime,
                        subscriptions: Mapping[tuple[str, str], int] | None = None) -> str | None:
    """Write the run's terminal event if a subscription listens; the event id, or None.

    ``subscriptions``: :func:`subscriptions_matching` read once for many runs (this run's agent included).
    """
    if terminal.triggered_by == RESERVED_EVENT_TRIGGER:
        return None
    event_type = event_type_for(terminal.status)
    if subscriptions is None:
        subscriptions = subscriptions_matching(conn, [terminal.agent_name])
    matched = subscriptions.get((terminal.agent_name, event_type), 0)
    if not matched:
        return None
    summary = terminal.response if terminal.status == "success" else terminal.error
    payload = {
        "execution_id": terminal.execution_id,
        "status": terminal.status,
        "triggered_by": terminal.triggered_by,
        "summary_or_error": None if summary is None else summary[:SUMMARY_MAX_CHARS],
        "duration_ms": terminal.duration_ms,
        "cost": terminal.cost,
        "fan_out_id": terminal.fan_out_id,
        "loop_id": terminal.loop_id,
    }
    event_id = f"evt_{secrets.token_urlsafe(12)}"
    conn.execute(sa.insert(agent_events).values(
        id=event_id, source_agent=terminal.agent_name, event_type=event_type, payload=json.dumps(payload),
        subscriptions_triggered=matched, created_at=format_utc(now)))
    return event_id
