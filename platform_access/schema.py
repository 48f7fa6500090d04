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
)

PLATFORM_TABLES = (schedule_executions, agent_schedules, agent_ownership)
