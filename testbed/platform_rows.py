"""Helpers that write platform rows the way Trinity does, for tests and benchmarks."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from exec_watchdog.platform_access.schema import (
    agent_activities,
    agent_event_subscriptions,
    agent_ownership,
    agent_schedules,
    schedule_executions,
)
from exec_watchdog.platform_access.timestamps import format_utc, utcnow


def insert_execution(conn: sa.Connection, execution_id: str, agent: str, *, age_seconds: float = 0,
                     status: str = "running", schedule_id: str = "__manual__", now: datetime | None = None,
                     **extra: Any) -> None:
    started = (now or utcnow()) - timedelta(seconds=age_seconds)
    values: dict[str, Any] = {
        "id": execution_id, "schedule_id": schedule_id, "agent_name": agent, "status": status,
        "started_at": format_utc(started), "message": "do the thing", "triggered_by": "manual",
    }
    values.update(extra)
    conn.execute(sa.insert(schedule_executions).values(**values))


def insert_schedule(conn: sa.Connection, schedule_id: str, agent: str, timeout_seconds: int | None) -> None:
    conn.execute(sa.insert(agent_schedules).values(id=schedule_id, agent_name=agent, name=schedule_id,
                                                   timeout_seconds=timeout_seconds))


def insert_agent(conn: sa.Connection, agent: str, timeout_seconds: int | None = 3600, max_parallel: int = 3) -> None:
    conn.execute(sa.insert(agent_ownership).values(agent_name=agent, execution_timeout_seconds=timeout_seconds,
                                                   max_parallel_tasks=max_parallel))


def insert_activity(conn: sa.Connection, activity_id: str, agent: str, execution_id: str | None, *,
                    activity_type: str = "chat_start", state: str = "started", age_seconds: float = 0,
                    now: datetime | None = None, **extra: Any) -> None:
    """An activity as Trinity's track_activity writes it (``started_at`` = ``created_at``, ``...Z``)."""
    stamp = format_utc((now or utcnow()) - timedelta(seconds=age_seconds))
    values: dict[str, Any] = {"id": activity_id, "agent_name": agent, "activity_type": activity_type,
                              "activity_state": state, "started_at": stamp, "created_at": stamp,
                              "triggered_by": "user", "related_execution_id": execution_id}
    values.update(extra)
    conn.execute(sa.insert(agent_activities).values(**values))


def insert_subscription(conn: sa.Connection, subscription_id: str, subscriber: str, source: str,
                        event_type: str = "agent.task.failed", *, enabled: bool = True) -> None:
    """An agent event subscription as Trinity's EVT-001 API writes it."""
    stamp = format_utc(utcnow())
    conn.execute(sa.insert(agent_event_subscriptions).values(
        id=subscription_id, subscriber_agent=subscriber, source_agent=source, event_type=event_type,
        target_message="{{payload.execution_id}} ended: {{payload.summary_or_error}}", enabled=1 if enabled else 0,
        created_at=stamp, updated_at=stamp, created_by="admin"))
