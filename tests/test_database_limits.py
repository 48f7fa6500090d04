"""The database layer under hostile rows, held locks and careless URLs: every connection gives up
instead of waiting without end, one bad row costs only itself, and no URL shows its password."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.slots import slot_metadata
from exec_watchdog.platform_access.timestamps import utcnow
from exec_watchdog.testbed.platform_rows import insert_execution


@pytest.fixture
def sqlite_platform(tmp_path: Path) -> Iterator[tuple[sa.Engine, Path]]:
    path = tmp_path / "trinity.db"
    engine = db.create_engine(f"sqlite:///{path}")
    db.create_platform_tables(engine, slot_metadata)
    yield engine, path
    engine.dispose()


def test_a_running_row_that_is_not_utf8_is_one_bad_row(sqlite_platform: tuple[sa.Engine, Path]) -> None:
    """SQLite hands back bytes that are not UTF-8: that row is unreadable, the others are fine."""
    engine, path = sqlite_platform
    with engine.begin() as conn:
        insert_execution(conn, "e-ok", "a1", age_seconds=5)
        insert_execution(conn, "e-bad", "a1", age_seconds=5)
    raw = sqlite3.connect(path)
    raw.execute("UPDATE schedule_executions SET agent_name = CAST(x'61ff31' AS TEXT) WHERE id = 'e-bad'")
    raw.commit()
    raw.close()
    with engine.connect() as conn:
        good, bad = db.running_executions(conn)
        assert [e.id for e in good] == ["e-ok"]
        assert len(bad) == 1 and "not valid UTF-8" in str(bad[0])
        assert isinstance(db.get_executions(conn, ["e-bad", "e-ok"])["e-bad"], db.BadRow)


@pytest.mark.parametrize("url", [
    "postgresql://watch:s3cr3t-pw@db.example:notaport/trinity",
    "postgresql://watch:s3cr3t-pw@db.example:5432/trinity?sslmode=bogus&x=1",
])
def test_a_database_url_typo_never_shows_the_password(url: str) -> None:
    try:
        engine = db.create_engine(url)
    except ValueError as exc:
        message = str(exc)
    else:
        engine.dispose()
        message = db.redacted(url)
    assert "s3cr3t-pw" not in message
    assert "***" in message or "unparseable" in message


def test_database_clock_is_read_from_the_database(database_url: str) -> None:
    engine = db.create_engine(database_url)
    try:
        with engine.connect() as conn:
            moment = db.database_now(conn)
        assert abs((moment - utcnow()).total_seconds()) < 5  # same machine here; the point is the source
        assert moment.utcoffset() == timedelta(0)
    finally:
        engine.dispose()


def test_every_postgres_connection_has_statement_and_lock_timeouts(postgres_url: str) -> None:
    engine = db.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar_one() == "10s"
            assert conn.execute(sa.text("SHOW lock_timeout")).scalar_one() == "3s"
    finally:
        engine.dispose()


def test_a_row_lock_held_elsewhere_fails_fast_instead_of_waiting(postgres_url: str) -> None:
    """Another connection holds the row locked: our guarded update gives up within the lock
    timeout (an OperationalError the remediator turns into retry), it does not queue behind it."""
    engine = db.create_engine(postgres_url)
    db.create_platform_tables(engine)
    with engine.begin() as conn:
        insert_execution(conn, "e1", "a1", age_seconds=600)
    locker = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    held, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with locker.begin() as conn:
            conn.execute(sa.text("SELECT id FROM schedule_executions WHERE id = 'e1' FOR UPDATE"))
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold_lock)
    thread.start()
    try:
        assert held.wait(10)
        with engine.connect() as conn:
            row = db.get_executions(conn, ["e1"])["e1"]
        assert isinstance(row, db.Execution)
        started = time.monotonic()
        with pytest.raises(sa.exc.OperationalError, match="lock"), engine.begin() as conn:
            db.fail_execution(conn, row, "x", utcnow())
        assert time.monotonic() - started < 8
    finally:
        release.set()
        thread.join()
        locker.dispose()
        engine.dispose()


async def test_the_exporter_counts_a_non_utf8_row_and_keeps_publishing(
        sqlite_platform: tuple[sa.Engine, Path]) -> None:
    """exporter_database_up stays 1, the bad row is in invalid_rows, the good one is published."""
    from exec_watchdog.exporter.gather import Gatherer, poll_client
    from exec_watchdog.testbed.servers import free_port

    engine, path = sqlite_platform
    with engine.begin() as conn:
        insert_execution(conn, "e-ok", "a1", age_seconds=5)
        insert_execution(conn, "e-bad", "a1", age_seconds=5)
    raw = sqlite3.connect(path)
    raw.execute("UPDATE schedule_executions SET started_at = CAST(x'32303236ff' AS TEXT) WHERE id = 'e-bad'")
    raw.commit()
    raw.close()
    client = poll_client(f"http://127.0.0.1:{free_port()}/{{agent}}", "secret", timeout=1.0, concurrency=4)
    try:
        snapshot = await Gatherer(engine, client, agent_timeout=1.0, scrape_timeout=3.0).gather()
    finally:
        await client.aclose()
    assert snapshot.database_up
    assert snapshot.invalid_rows == 1
    assert [e.execution_id for e in snapshot.executions] == ["e-ok"]
