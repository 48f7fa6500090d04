"""The exporter's run history: incremental reads that count every completed row exactly once, on
SQLite and a real PostgreSQL, and the series they publish."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exec_watchdog.common.contract import ExporterMetric as names
from exec_watchdog.exporter.history import DURATION_BUCKETS, RunHistory
from exec_watchdog.platform_access.database import create_engine, create_platform_tables
from exec_watchdog.platform_access.run_history import FINAL_STATUSES, RECOVERED_NOTICE, WATCHDOG_ACTIONS
from exec_watchdog.platform_access.schema import MANUAL_SCHEDULE, agent_ownership, schedule_executions
from exec_watchdog.platform_access.timestamps import format_utc, utcnow
from exec_watchdog.testbed.platform_rows import insert_agent, insert_schedule
from tests.exposition_oracle import FixedCollector, HistoryValues, history_families

NOW = utcnow().replace(microsecond=0)


def _samples(history: RunHistory) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(history.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(history: RunHistory, name: str, **labels: str) -> float | None:
    return _samples(history).get((name, tuple(sorted(labels.items()))))


def _complete(conn: sa.Connection, run_id: str, *, agent: str = "a1", schedule: str = "s1", status: str = "success",
              seconds: float = 30, completed: datetime = NOW, duration: bool = True, **extra: Any) -> None:
    conn.execute(sa.insert(schedule_executions).values(
        id=run_id, schedule_id=schedule, agent_name=agent, status=status, message="m", triggered_by="schedule",
        started_at=format_utc(completed - timedelta(seconds=seconds)), completed_at=format_utc(completed),
        duration_ms=int(seconds * 1000) if duration else None, **extra))


def _count(history: RunHistory, status: str = "success", schedule: str = "s1") -> float | None:
    return _value(history, f"{names.SCHEDULE_RUN_DURATION}_count", agent="a1", schedule_id=schedule, status=status)


def test_first_read_counts_every_completed_row_by_status_and_bucket(engine: sa.Engine) -> None:
    create_platform_tables(engine)
    with engine.begin() as conn:
        insert_agent(conn, "a1", timeout_seconds=1200)
        insert_schedule(conn, "s1", "a1", None)
        insert_schedule(conn, "zero", "a1", 0)
        _complete(conn, "r1", seconds=20)
        _complete(conn, "r2", seconds=100)
        _complete(conn, "r3", status="failed", seconds=50, duration=False)  # NULL duration: completed - started
        _complete(conn, "m1", schedule="__manual__", seconds=5)
        conn.execute(sa.insert(schedule_executions).values(  # still running: not history
            id="run", schedule_id="s1", agent_name="a1", status="running", message="m", triggered_by="schedule",
            started_at=format_utc(NOW)))
    history = RunHistory(engine, clock=lambda: NOW)
    assert _value(history, names.HISTORY_READY) == 0.0
    history.read()
    assert _count(history) == 2
    assert _value(history, f"{names.SCHEDULE_RUN_DURATION}_bucket", agent="a1", schedule_id="s1",
                  status="success", le="30.0") == 1
    assert _value(history, f"{names.SCHEDULE_RUN_DURATION}_sum", agent="a1", schedule_id="s1",
                  status="success") == 120
    assert _value(history, f"{names.SCHEDULE_RUN_DURATION}_sum", agent="a1", schedule_id="s1", status="failed") == 50
    assert _count(history, schedule="__manual__") == 1
    # COALESCE(schedule, agent, 3600), then 0 means 900; manual runs take the agent's.
    assert _value(history, names.SCHEDULE_TIMEOUT, agent="a1", schedule_id="s1") == 1200
    assert _value(history, names.SCHEDULE_TIMEOUT, agent="a1", schedule_id="zero") == 900
    assert _value(history, names.SCHEDULE_TIMEOUT, agent="a1", schedule_id="__manual__") == 1200
    assert _value(history, names.HISTORY_READY) == 1.0


def test_incremental_reads_add_new_and_late_committed_rows_once(engine: sa.Engine) -> None:
    create_platform_tables(engine)
    clock = [NOW]
    history = RunHistory(engine, overlap_seconds=300, clock=lambda: clock[0])
    with engine.begin() as conn:
        _complete(conn, "r1", completed=NOW - timedelta(seconds=10))
    history.read()
    assert _count(history) == 1
    clock[0] = NOW + timedelta(seconds=15)
    with engine.begin() as conn:
        _complete(conn, "r2", completed=NOW + timedelta(seconds=5))
        # Stamped before the previous read began, committed after it: inside the overlap.
        _complete(conn, "late", completed=NOW - timedelta(seconds=120))
        # Equal timestamps: two rows completed at the same instant.
        _complete(conn, "twin-a", completed=NOW + timedelta(seconds=7))
        _complete(conn, "twin-b", completed=NOW + timedelta(seconds=7))
    history.read()
    assert _count(history) == 5
    clock[0] = NOW + timedelta(seconds=30)
    history.read()  # nothing new: re-reads the overlap, counts nothing twice
    history.read()
    assert _count(history) == 5
    # A restarted exporter derives the same totals from the table.
    restarted = RunHistory(engine, clock=lambda: clock[0])
    restarted.read()
    assert _count(restarted) == 5


BASE = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)


def _complete_as(conn: sa.Connection, run_id: str, completed_at: str) -> None:
    """A successful 30 s run whose completed_at is written exactly as given."""
    conn.execute(sa.insert(schedule_executions).values(
        id=run_id, schedule_id="s1", agent_name="a1", status="success", message="m", triggered_by="schedule",
        started_at="2026-12-01T00:00:00Z", completed_at=completed_at, duration_ms=30_000))


def test_incremental_reads_compare_completion_times_as_times_whatever_their_form(engine: sa.Engine) -> None:
    """`2026-12-01 10:00:30` (space, as SQLite's datetime() writes), offsets and `T...Z` rows completed after
    the watermark are each counted once; a space-form row inside the overlap is not counted twice."""
    create_platform_tables(engine)
    clock = [BASE]
    history = RunHistory(engine, overlap_seconds=300, clock=lambda: clock[0])
    with engine.begin() as conn:
        _complete_as(conn, "early-space", "2026-12-01 09:58:00")  # inside the next read's overlap
        _complete_as(conn, "old-space", "2026-12-01 09:00:00")
    history.read()
    assert _count(history) == 2
    clock[0] = BASE + timedelta(seconds=60)
    with engine.begin() as conn:
        for n in range(5):
            _complete_as(conn, f"space-{n}", f"2026-12-01 10:00:{10 + n:02d}")
            _complete_as(conn, f"t-{n}", f"2026-12-01T10:00:{20 + n:02d}.000000Z")
        _complete_as(conn, "west", "2026-12-01T05:00:40-05:00")  # 10:00:40 UTC, its text reads earlier
        _complete_as(conn, "east", "2026-12-01T12:00:41+02:00")
        _complete_as(conn, "late-space", "2026-12-01 09:57:30")  # stamped before, committed after the read
    history.read()
    assert _count(history) == 2 + 13
    clock[0] = BASE + timedelta(seconds=120)
    history.read()
    history.read()
    assert _count(history) == 15
    restarted = RunHistory(engine, clock=lambda: clock[0])
    restarted.read()
    assert _count(restarted) == 15


def test_runs_completed_before_the_advice_window_are_counted_apart_and_join_them_as_the_window_moves(
        engine: sa.Engine) -> None:
    """The before-window counters hold the counted runs completed at or before now - window, from the first
    read (a fresh exporter over old history) and as runs age out; a restart derives the same."""
    create_platform_tables(engine)
    window = 3600.0
    with engine.begin() as conn:
        _complete(conn, "old", seconds=20, completed=NOW - timedelta(hours=5))
        _complete(conn, "old-space", seconds=100, completed=NOW)  # rewritten below in space form
        conn.execute(sa.update(schedule_executions).where(schedule_executions.c.id == "old-space")
                     .values(completed_at=(NOW - timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S")))
        _complete(conn, "edge", seconds=20, completed=NOW - timedelta(seconds=3599))
        _complete(conn, "new", seconds=20, completed=NOW - timedelta(seconds=60))
        _complete(conn, "killed", status="failed", duration=False, completed=NOW - timedelta(seconds=1800),
                  error="Execution auto-terminated after 12 minutes by watchdog (exceeded timeout of 600s)")
    clock = [NOW]
    history = RunHistory(engine, window_seconds=window, clock=lambda: clock[0])
    before = names.SCHEDULE_SUCCESSFUL_RUNS_BEFORE_WINDOW
    ended_before = names.SCHEDULE_RUNS_ENDED_BEFORE_WINDOW

    def before_le(le: str) -> float | None:
        return _value(history, before, agent="a1", schedule_id="s1", le=le)

    history.read()
    assert _count(history) == 4
    assert (before_le("30.0"), before_le("+Inf")) == (1, 2)  # old (20 s) and old-space (100 s)
    assert _value(history, ended_before, agent="a1", schedule_id="s1", action="auto_terminated") == 0
    assert _value(history, names.HISTORY_WINDOW) == window
    clock[0] = NOW + timedelta(seconds=1)  # edge is now exactly window old: before it
    history.read()
    assert (before_le("30.0"), before_le("+Inf")) == (2, 3)
    clock[0] = NOW + timedelta(seconds=1801)
    history.read()
    assert _value(history, ended_before, agent="a1", schedule_id="s1", action="auto_terminated") == 1
    assert before_le("+Inf") == 3
    restarted = RunHistory(engine, window_seconds=window, clock=lambda: clock[0])
    restarted.read()
    assert {k: v for k, v in _samples(restarted).items() if k[0] in (before, ended_before)} == {
        k: v for k, v in _samples(history).items() if k[0] in (before, ended_before)}


def test_runs_the_watchdog_ended_are_counted_by_action_from_their_texts(engine: sa.Engine) -> None:
    create_platform_tables(engine)
    with engine.begin() as conn:
        _complete(conn, "orphan", status="failed", duration=False,
                  error="[Timeout] slow. Cleanup: Execution not tracked by agent 'a1' (not running, not pending, "
                        "not recently completed) and no live backend dispatcher — recovered by watchdog, "
                        "no retained result")
        _complete(conn, "overdue", status="failed", duration=False,
                  error="Execution auto-terminated after 12 minutes by watchdog (exceeded timeout of 600s)")
        _complete(conn, "claimed", response="[Recovered by watchdog: this result was kept by the agent]\nok")
        _complete(conn, "plain-failure", status="failed", error="exit code 1")
        _complete(conn, "other", agent="a1", schedule="s2")
    history = RunHistory(engine)
    history.read()
    ended = names.SCHEDULE_RUNS_ENDED_BY_WATCHDOG
    assert {action: _value(history, ended, agent="a1", schedule_id="s1", action=action)
            for action in ("orphan_recovered", "auto_terminated", "result_recovered")} == {
        "orphan_recovered": 1, "auto_terminated": 1, "result_recovered": 1}
    # Every schedule with runs has all three actions, zeros included.
    assert _value(history, ended, agent="a1", schedule_id="s2", action="auto_terminated") == 0


def test_a_soft_deleted_agents_schedule_timeouts_histograms_and_counters_are_not_published(engine: sa.Engine) -> None:
    """Deleting an agent (agent_ownership.deleted_at) takes its history series away at the next read;
    restoring it brings back its whole history, still counted."""
    create_platform_tables(engine)
    with engine.begin() as conn:
        for agent in ("a1", "gone"):
            insert_agent(conn, agent)
            insert_schedule(conn, "s1-" + agent, agent, 600)
            _complete(conn, "ok-" + agent, agent=agent, schedule="s1-" + agent)
            _complete(conn, "ended-" + agent, agent=agent, schedule="s1-" + agent, status="failed", duration=False,
                      error="Execution auto-terminated after 12 minutes by watchdog (exceeded timeout of 600s)")
    history = RunHistory(engine, clock=lambda: NOW)
    history.read()

    def agents_published() -> set[str]:
        return {dict(labels)["agent"] for (_name, labels) in _samples(history) if "agent" in dict(labels)}

    assert agents_published() == {"a1", "gone"}
    with engine.begin() as conn:
        conn.execute(sa.update(agent_ownership).where(agent_ownership.c.agent_name == "gone")
                     .values(deleted_at=format_utc(NOW)))
    history.read()
    assert agents_published() == {"a1"}
    assert _value(history, names.SCHEDULE_TIMEOUT, agent="a1", schedule_id="s1-a1") == 600
    assert _value(history, names.SCHEDULE_TIMEOUT, agent="gone", schedule_id="s1-gone") is None
    with engine.begin() as conn:
        conn.execute(sa.update(agent_ownership).where(agent_ownership.c.agent_name == "gone").values(deleted_at=None))
    history.read()
    assert _value(history, f"{names.SCHEDULE_RUN_DURATION}_count", agent="gone", schedule_id="s1-gone",
                  status="success") == 1
    assert _value(history, names.SCHEDULE_RUNS_ENDED_BY_WATCHDOG, agent="gone", schedule_id="s1-gone",
                  action="auto_terminated") == 1


def test_unusable_rows_are_skipped_and_counted_once(engine: sa.Engine) -> None:
    create_platform_tables(engine)
    with engine.begin() as conn:
        _complete(conn, "good")
        conn.execute(sa.insert(schedule_executions).values(
            id="bad", schedule_id="s1", agent_name="a1", status="failed", message="m", triggered_by="x",
            started_at="yesterday-ish", completed_at=format_utc(NOW)))
        conn.execute(sa.insert(schedule_executions).values(
            id="nobody", schedule_id="s1", agent_name=None, status="success", message="m", triggered_by="x",
            started_at=format_utc(NOW), completed_at=format_utc(NOW), duration_ms=5))
    history = RunHistory(engine, clock=lambda: NOW)
    history.read()
    history.read()  # both are inside the overlap: seen again, not counted again
    assert _value(history, names.HISTORY_SKIPPED_ROWS) == 2
    assert _count(history) == 1


async def test_a_scrape_publishes_the_last_finished_read_and_never_starts_two(engine: sa.Engine) -> None:
    create_platform_tables(engine)
    with engine.begin() as conn:
        _complete(conn, "r1")
    history = RunHistory(engine)
    first, second = await asyncio.gather(history.scrape(5.0), history.scrape(5.0))
    assert first == second and history.reads == 1
    assert b'exec_watchdog_schedule_run_duration_seconds_count{agent="a1",schedule_id="s1",status="success"} 1.0' \
        in first


async def test_an_unreadable_database_keeps_the_last_totals_and_the_scrape_answers(tmp_path: Path) -> None:
    from exec_watchdog.platform_access.database import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'trinity.db'}")
    create_platform_tables(engine)
    with engine.begin() as conn:
        _complete(conn, "r1")
    history = RunHistory(engine)
    await history.scrape(5.0)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE agent_schedules")  # the next read fails
    body = await history.scrape(5.0)
    assert b'status="success"} 1.0' in body and history.reads == 1
    engine.dispose()


# -- the exposition against client_python's ----------------------------------------------------------

_label_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), min_size=1, max_size=8)
_timeout = st.none() | st.integers(1, 10**6)
# Whole seconds, so that the sum does not depend on the order the rows are added in; bounds included.
_seconds = st.sampled_from([int(b) for b in DURATION_BUCKETS if b != float("inf")]) | st.integers(0, 200_000)
# How the watchdog's texts mark a row: error for the first two actions, response for a claimed result.
_MARKS: dict[str | None, dict[str, Any]] = {
    None: {},
    "orphan_recovered": {"error": "lost — recovered by watchdog"},
    "auto_terminated": {"error": "Execution auto-terminated after 5 minutes by watchdog"},
    "result_recovered": {"response": RECOVERED_NOTICE + "\nok"},
}


# Agents with their timeouts, schedules with their agent and timeout, completed runs (agent, schedule,
# status, seconds, watchdog action) and how many rows have no agent.
_Platform = tuple[dict[str, int | None], dict[str, tuple[str, int | None]],
                  list[tuple[str, str, str, int, str | None]], int]


@st.composite
def _platform(draw: st.DrawFn) -> _Platform:
    agents = draw(st.dictionaries(_label_text, _timeout, min_size=1, max_size=3))
    schedules = draw(st.dictionaries(_label_text.filter(lambda s: s != MANUAL_SCHEDULE),
                                     st.tuples(st.sampled_from(sorted(agents)), _timeout), max_size=3))
    runs = draw(st.lists(st.tuples(st.sampled_from(sorted(agents)), st.sampled_from([*schedules, MANUAL_SCHEDULE]),
                                   st.sampled_from(FINAL_STATUSES), _seconds,
                                   st.sampled_from([None, *WATCHDOG_ACTIONS])), max_size=8))
    return agents, schedules, runs, draw(st.integers(0, 2))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_platform())
def test_history_renders_byte_for_byte_like_client_python(platform: _Platform) -> None:
    agents, schedules, runs, skipped = platform
    engine = create_engine("sqlite://")
    create_platform_tables(engine)
    with engine.begin() as conn:
        for agent, agent_timeout in agents.items():
            insert_agent(conn, agent, timeout_seconds=agent_timeout)
        for schedule, (agent, schedule_timeout) in schedules.items():
            insert_schedule(conn, schedule, agent, schedule_timeout)
        for n, (agent, schedule, status, seconds, action) in enumerate(runs):
            _complete(conn, f"r{n}", agent=agent, schedule=schedule, status=status, seconds=seconds,
                      **_MARKS[action])
        for n in range(skipped):
            conn.execute(sa.insert(schedule_executions).values(
                id=f"nobody{n}", schedule_id="s", agent_name=None, status="success", message="m", triggered_by="x",
                started_at=format_utc(NOW), completed_at=format_utc(NOW), duration_ms=5))
    history = RunHistory(engine)
    before = history.exposition()
    history.read()
    engine.dispose()

    durations: dict[tuple[str, str, str], tuple[dict[float, int], float]] = {}
    ended: dict[tuple[str, str, str], int] = {}
    for agent, schedule, status, seconds, action in runs:
        buckets, total = durations.get((agent, schedule, status), ({b: 0 for b in DURATION_BUCKETS}, 0.0))
        buckets[min(b for b in DURATION_BUCKETS if seconds <= b)] += 1
        durations[(agent, schedule, status)] = (buckets, total + seconds)
        if action is not None:
            ended[(agent, schedule, action)] = ended.get((agent, schedule, action), 0) + 1
    timeouts = {(agent, MANUAL_SCHEDULE): agent_timeout or 3600 for agent, agent_timeout in agents.items()}
    timeouts |= {(agent, schedule): schedule_timeout or agents[agent] or 3600
                 for schedule, (agent, schedule_timeout) in schedules.items()}
    # The read's wall time is the one value the test cannot know: it is taken from the output.
    read_seconds = _value(history, names.HISTORY_READ_DURATION)

    assert before == _client_python(HistoryValues({}, {}, {}, None, None))
    assert history.exposition() == _client_python(HistoryValues(durations, ended, timeouts, skipped, read_seconds))


def _client_python(values: HistoryValues) -> bytes:
    """client_python's text, with each bucket's ``le`` moved last: the one place the history departs
    from client_python's sorted labels (it writes ``le`` last, as Prometheus' Go client does)."""
    registry = CollectorRegistry()
    registry.register(FixedCollector(history_families(values)))
    return b"\n".join(_le_last(line) for line in generate_latest(registry).split(b"\n"))


def _le_last(line: bytes) -> bytes:
    if not line.startswith(f"{names.SCHEDULE_RUN_DURATION}_bucket{{".encode()):
        return line
    # An escaped label value never holds `,le="` (its quotes follow a backslash), nor does the
    # sample value hold `"}`: both finds below are unambiguous.
    start = line.index(b',le="')
    end = line.index(b'"', start + 5) + 1
    close = line.rindex(b'"}') + 1
    return line[:start] + line[end:close] + line[start:end] + line[close:]
