"""Shared fixtures: real servers started per test session, fresh databases per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from exec_watchdog.platform_access import database as db
from exec_watchdog.platform_access.slots import slot_metadata
from exec_watchdog.simulated_platform.agent_server import AgentServer, serve_agents
from exec_watchdog.simulated_platform.process_registry import RegistryConfig
from exec_watchdog.testbed import servers
from exec_watchdog.testbed.remediator_harness import SECRET, Harness, remediator


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A real PostgreSQL server for the whole run (throwaway unless a variable names one)."""
    with servers.postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with servers.redis_server() as url:
        yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[object]:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'trinity.db'}"


@pytest.fixture
def database_file(tmp_path: Path) -> Path:
    """An SQLite file with the platform's tables and the embedded slot tables, as `db init` makes."""
    path = tmp_path / "trinity.db"
    engine = db.create_engine(f"sqlite:///{path}")
    db.create_platform_tables(engine, slot_metadata)
    engine.dispose()
    return path


@pytest.fixture
def postgres_url(postgres_server_url: str) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return servers.create_database(postgres_server_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Run the test once on SQLite and once on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'trinity.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    eng = db.create_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def platform(engine: sa.Engine) -> sa.Engine:
    """``engine`` with the platform's tables and the embedded slot tables created."""
    db.create_platform_tables(engine, slot_metadata)
    return engine


# The remediator's peers, for the remediator tests; a module that needs other agents defines its own
# ``agents`` fixture, which ``harness`` then uses.
@pytest.fixture
async def agents() -> AsyncIterator[AgentServer]:
    """Agents a1 and a2; a terminated run is killed after 0.5 s, its process waited for 1 s."""
    server = await serve_agents(["a1", "a2"], SECRET, config=RegistryConfig(grace_seconds=0.5, kill_wait_seconds=1))
    yield server
    await server.stop()


@pytest.fixture
async def harness(sqlite_url: str, redis_url: str, redis_client: object, agents: AgentServer) -> AsyncIterator[Harness]:
    """A remediator on a fresh SQLite database and the session's Redis, wired to ``agents``."""
    async with remediator(sqlite_url, redis_url, agents) as h:
        yield h
