"""Platform tables and queries, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.schema import schedule_executions
from exec_watchdog.platform_access.timestamps import BadTimestamp, format_utc, parse_utc, utcnow
from exec_watchdog.testbed.platform_rows import insert_agent, insert_execution, insert_schedule


def test_running_executions_resolve_timeout_through_schedule_agent_default(platform: sa.Engine) -> None:
    with platform.begin() as c:
        insert_agent(c, "a1", timeout_seconds=900)
        insert_agent(c, "a2", timeout_seconds=None)
        insert_schedule(c, "s-own", "a1", timeout_seconds=120)
        insert_schedule(c, "s-inherit", "a1", timeout_seconds=None)
        insert_execution(c, "e-schedule", "a1", schedule_id="s-own")
        insert_execution(c, "e-agent", "a1", schedule_id="s-inherit")
        insert_execution(c, "e-default", "a2")
        insert_execution(c, "e-unknown-agent", "ghost")
    with platform.connect() as c:
        rows, bad = db.running_executions(c)
    assert bad == []
    assert {r.id: r.timeout_seconds for r in rows} == {
        "e-schedule": 120, "e-agent": 900, "e-default": 3600, "e-unknown-agent": 3600}


def test_running_executions_exclude_lease_rows_and_other_statuses(platform: sa.Engine) -> None:
    with platform.begin() as c:
        insert_execution(c, "mine", "a1")
        insert_execution(c, "leased", "a1", lease_expires_at=format_utc(utcnow()))
        for status in ("queued", "success", "failed", "cancelled", "skipped", "pending_retry"):
            insert_execution(c, f"e-{status}", "a1", status=status)
    with platform.connect() as c:
        rows, _ = db.running_executions(c)
    assert [r.id for r in rows] == ["mine"]


def test_naive_and_zulu_timestamps_both_mean_utc(platform: sa.Engine) -> None:
    with platform.begin() as c:
        insert_execution(c, "zulu", "a1", started_at="2026-11-27T10:00:00.000000Z")
        insert_execution(c, "naive", "a1", started_at="2026-11-27T10:00:00.000000")
        insert_execution(c, "spaced", "a1", started_at="2026-11-27 10:00:00")
    with platform.connect() as c:
        rows, bad = db.running_executions(c)
    assert bad == []
    assert len({r.started_at for r in rows}) == 1
    assert rows[0].started_at.utcoffset() == timedelta(0)


def test_unreadable_rows_are_reported_not_returned(platform: sa.Engine) -> None:
    with platform.begin() as c:
        insert_execution(c, "ok", "a1")
        insert_execution(c, "bad-time", "a1", started_at="yesterday-ish")
        insert_execution(c, "no-agent", None)  # type: ignore[arg-type]
        insert_execution(c, "odd-status", "a1", status="exploded")
    with platform.connect() as c:
        rows, bad = db.running_executions(c)
        assert [r.id for r in rows] == ["ok"]
        assert len(bad) == 2 and all(isinstance(b, db.BadRow) for b in bad)
        assert any("yesterday-ish" in str(b) for b in bad)
        odd = db.get_executions(c, ["odd-status"])["odd-status"]
        assert isinstance(odd, db.BadRow) and "unknown status 'exploded'" in str(odd)


def test_fail_execution_wins_once_and_sets_error_and_completion_with_a_null_duration(platform: sa.Engine) -> None:
    now = utcnow()
    with platform.begin() as c:
        insert_execution(c, "e1", "a1", age_seconds=90, now=now)
    with platform.begin() as c:
        execution = db.get_executions(c, ["e1"])["e1"]
        assert isinstance(execution, db.Execution)
        assert db.fail_execution(c, execution, "lost — recovered by watchdog", now) is True
        assert db.fail_execution(c, execution, "again", now) is False
    with platform.connect() as c:
        row = c.execute(sa.select(schedule_executions).where(schedule_executions.c.id == "e1")).one()
    assert row.status == "failed"
    assert row.error == "lost — recovered by watchdog"
    assert parse_utc(row.completed_at) == now
    assert row.duration_ms is None  # Trinity's watchdog writes NULL on a failure


def test_fail_execution_never_touches_completed_or_leased_rows(platform: sa.Engine) -> None:
    now = utcnow()
    with platform.begin() as c:
        insert_execution(c, "done", "a1", age_seconds=90)
        insert_execution(c, "leased", "a1", age_seconds=90, lease_expires_at=format_utc(now))
        found = db.get_executions(c, ["done", "leased"])
        done, leased = found["done"], found["leased"]
        assert isinstance(done, db.Execution) and isinstance(leased, db.Execution)
        c.execute(sa.update(schedule_executions).where(schedule_executions.c.id == "done").values(status="success"))
    with platform.begin() as c:
        assert db.fail_execution(c, done, "x", now) is False
        assert db.fail_execution(c, leased, "x", now) is False
        statuses = dict(c.execute(sa.select(schedule_executions.c.id, schedule_executions.c.status)).all())
    assert statuses == {"done": "success", "leased": "running"}


def test_extra_trinity_columns_are_tolerated_and_left_alone(database_url: str) -> None:
    engine = db.create_engine(database_url)
    with engine.begin() as c:
        c.execute(sa.text(
            "CREATE TABLE schedule_executions (id TEXT PRIMARY KEY, schedule_id TEXT NOT NULL, agent_name TEXT, "
            "status TEXT NOT NULL, started_at TEXT NOT NULL, completed_at TEXT, duration_ms INTEGER, "
            "message TEXT NOT NULL, response TEXT, error TEXT, triggered_by TEXT NOT NULL, queued_at TEXT, "
            "lease_expires_at TEXT, cost REAL, tool_calls TEXT, context_used INTEGER, model_used TEXT, "
            "execution_log TEXT, claude_session_id TEXT)"))
        c.execute(sa.text("CREATE TABLE agent_schedules (id TEXT PRIMARY KEY, agent_name TEXT NOT NULL, "
                          "name TEXT NOT NULL, cron_expression TEXT, timeout_seconds INTEGER)"))
        c.execute(sa.text("CREATE TABLE agent_ownership (id INTEGER PRIMARY KEY, agent_name TEXT, owner_id INTEGER, "
                          "execution_timeout_seconds INTEGER DEFAULT 3600, max_parallel_tasks INTEGER DEFAULT 3, "
                          "deleted_at TEXT)"))
        c.execute(sa.text(
            "INSERT INTO schedule_executions (id, schedule_id, agent_name, status, started_at, message, "
            "triggered_by, cost, model_used) VALUES ('x', '__manual__', 'a1', 'running', "
            "'2026-11-27T10:00:00.000000Z', 'm', 'manual', 1.5, 'opus')"))
    with engine.begin() as c:
        rows, _ = db.running_executions(c)
        assert db.fail_execution(c, rows[0], "recovered", utcnow())
    with engine.connect() as c:
        cost, model = c.execute(sa.text("SELECT cost, model_used FROM schedule_executions")).one()
    assert (cost, model) == (1.5, "opus")
    with pytest.raises(db.DatabaseExists, match="never alters an existing database"):
        db.create_platform_tables(engine)
    engine.dispose()


def test_agents_fall_back_to_default_parallel_limit(platform: sa.Engine) -> None:
    with platform.begin() as c:
        insert_agent(c, "a1", max_parallel=5)
        insert_agent(c, "a2", max_parallel=0)
    with platform.connect() as c:
        assert {a.name: a.max_parallel_tasks for a in db.agents(c)} == {"a1": 5, "a2": 3}


@pytest.mark.parametrize("value", ["", "not a time", "2026-13-01T00:00:00Z", 12345, None])
def test_parse_utc_rejects_garbage_with_a_typed_error(value: object) -> None:
    with pytest.raises(BadTimestamp):
        parse_utc(value)


def test_unparseable_database_url_says_what_to_use() -> None:
    with pytest.raises(ValueError, match="sqlite:///"):
        db.create_engine("::not a url::")
    with pytest.raises(ValueError, match="unsupported database"):
        db.create_engine("mysql://root@localhost/x")
