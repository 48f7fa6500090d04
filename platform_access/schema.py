"""Trinity's tables, limited to the columns exec-watchdog reads or writes.

A real Trinity database has ~40 more columns in ``schedule_executions``; SQLAlchemy Core only
names the columns we declare, so extra columns are simply left alone. ``create_platform_tables``
exists for the embedded default (and the simulator) and is never run against a database that
already has these tables.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

RUNNING = "running"
STATUSES = frozenset({"queued", "running", "success", "failed", "cancelled", "skipped", "pending_retry"})
MANUAL_SCHEDULE = "__manual__"
DEFAULT_TIMEOUT_SECONDS = 3600
ZERO_TIMEOUT_SECONDS = 900  # Trinity: a COALESCE that comes out 0 or NULL means 15 minutes
TERMINAL_STATUSES = frozenset({"success", "failed", "cancelled", "skipped"})
DEFAULT_MAX_PARALLEL_TASKS = 3

schedule_executions = sa.Table(
    "schedule_executions",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("schedule_id", sa.Text, nullable=False),
    sa.Column("agent_name", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("started_at", sa.Text, nullable=False),
    sa.Column("completed_at", sa.Text),
    sa.Column("duration_ms", sa.Integer),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("response", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("triggered_by", sa.Text, nullable=False),
    sa.Column("queued_at", sa.Text),
    sa.Column("lease_expires_at", sa.Text),
    # Written only when a retained result is claimed (Trinity #2944).
    sa.Column("cost", sa.Float),
    sa.Column("execution_log", sa.Text),
    sa.Column("claude_session_id", sa.Text),
    # Read only for the payload of an agent.task.* event (fan-out and loop correlation).
    sa.Column("fan_out_id", sa.Text),
    sa.Column("loop_id", sa.Text),
    sa.Index("idx_schedule_executions_status", "status"),
)

agent_schedules = sa.Table(
    "agent_schedules",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("agent_name", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False, server_default=""),
    sa.Column("timeout_seconds", sa.Integer),
)

agent_ownership = sa.Table(
    "agent_ownership",
    metadata,
    sa.Column("agent_name", sa.Text, primary_key=True),
    sa.Column("execution_timeout_seconds", sa.Integer, server_default=str(DEFAULT_TIMEOUT_SECONDS)),
    sa.Column("max_parallel_tasks", sa.Integer, server_default=str(DEFAULT_MAX_PARALLEL_TASKS)),
    sa.Column("deleted_at", sa.Text),  # soft-deleted agents are not the watchdog's business
)

# -- Activities and agent events (Trinity's db/schema.py shape, every column) -------------------------
# An execution's activity is the row with related_execution_id = its id and activity_type in
# DISPATCH_ACTIVITY_TYPES; every transition we win closes it (remediator/closing.py).

ACTIVITY_STARTED = "started"
DISPATCH_ACTIVITY_TYPES = ("chat_start", "schedule_start")

agent_activities = sa.Table(
    "agent_activities",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("agent_name", sa.Text, nullable=False),
    sa.Column("activity_type", sa.Text, nullable=False),
    sa.Column("activity_state", sa.Text, nullable=False),
    sa.Column("parent_activity_id", sa.Text),
    sa.Column("started_at", sa.Text, nullable=False),
    sa.Column("completed_at", sa.Text),
    sa.Column("duration_ms", sa.Integer),
    sa.Column("user_id", sa.Integer),
    sa.Column("triggered_by", sa.Text, nullable=False),
    sa.Column("related_chat_message_id", sa.Text),
    sa.Column("related_execution_id", sa.Text),
    sa.Column("details", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.Text, server_default=sa.text("CURRENT_TIMESTAMP")),
    sa.Index("idx_activities_execution", "related_execution_id"),
    sa.Index("idx_activities_state", "activity_state"),
)

agent_event_subscriptions = sa.Table(
    "agent_event_subscriptions",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("subscriber_agent", sa.Text, nullable=False),
    sa.Column("source_agent", sa.Text, nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("target_message", sa.Text, nullable=False),
    sa.Column("enabled", sa.Integer, server_default="1"),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Text, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.UniqueConstraint("subscriber_agent", "source_agent", "event_type"),
)

agent_events = sa.Table(
    "agent_events",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("source_agent", sa.Text, nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("payload", sa.Text),
    sa.Column("subscriptions_triggered", sa.Integer, server_default="0"),
    sa.Column("created_at", sa.Text, nullable=False),
)

PLATFORM_TABLES = (schedule_executions, agent_schedules, agent_ownership, agent_activities,
                   agent_event_subscriptions, agent_events)
