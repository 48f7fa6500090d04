"""Throwaway real servers for tests and benchmarks: PostgreSQL, Redis and Alertmanager on free loopback ports.

Each is started from the installed binaries in a temporary directory and removed afterwards, so
no test depends on state another run left behind. A variable can point at an existing server
instead (EXEC_WATCHDOG_TEST_POSTGRES_URL, EXEC_WATCHDOG_TEST_REDIS_URL); then a fresh database
(PostgreSQL) or a fresh database number (Redis) is used and cleaned up.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def postgres_binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    if not found:
        raise RuntimeError(f"{name} not found: install the Debian package 'postgresql' (make system-deps)")
    return found


def init_postgres_cluster(root: Path) -> dict[str, Any]:
    """An empty cluster in ``root/data`` (trust authentication, user postgres); returns the
    ``subprocess`` arguments its server must run with."""
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres user
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        run_as = {"user": pw.pw_uid, "group": pw.pw_gid}
    subprocess.run([postgres_binary("initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "postgres",
                    "--no-sync"], check=True, capture_output=True, **run_as)
    return run_as


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a SQLAlchemy URL of a fresh, empty PostgreSQL database."""
    existing = os.environ.get("EXEC_WATCHDOG_TEST_POSTGRES_URL")
    if existing:
        yield from _fresh_database(existing)
        return
    tmp = Path(tempfile.mkdtemp(prefix="ew-pg-"))
    run_as = init_postgres_cluster(tmp)
    port = free_port()
    proc = subprocess.Popen(
        [postgres_binary("postgres"), "-D", str(tmp / "data"), "-p", str(port), "-h", "127.0.0.1", "-k", str(tmp),
         "-c", "fsync=off", "-c", "max_connections=200"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **run_as,
    )
    with _running(proc, port, tmp):
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        wait_postgres_ready(url)
        yield url


def wait_postgres_ready(url: str, timeout: float = 20.0) -> None:
    """Until PostgreSQL at ``url`` takes connections (it refuses them while starting up)."""
    import sqlalchemy as sa

    deadline = time.monotonic() + timeout
    while True:
        engine = sa.create_engine(url)
        try:
            with engine.connect():
                return
        except sa.exc.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        finally:
            engine.dispose()


def _fresh_database(admin_url: str) -> Iterator[str]:
    import sqlalchemy as sa

    name = f"ew_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield str(sa.make_url(admin_url).set(database=name))
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def create_database(server_url: str) -> str:
    """Create one more empty database on a test PostgreSQL server; return its URL."""
    import sqlalchemy as sa

    name = f"ew_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return str(sa.make_url(server_url).set(database=name))


@contextlib.contextmanager
def throwaway_database(backend: str, directory: Path) -> Iterator[str]:
    """The URL of an empty platform database: a SQLite file in ``directory``, or ("postgresql") a
    database on a throwaway PostgreSQL server that lives as long as the context."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'trinity.db'}"
        return
    if backend != "postgresql":
        raise ValueError(f"unknown database backend {backend!r}: sqlite or postgresql")
    with postgres_server() as server_url:
        yield create_database(server_url)


def redis_argv(binary: str, port: int, directory: str | Path) -> list[str]:
    """A redis-server on 127.0.0.1:``port`` that keeps nothing on disk."""
    return [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
            "--dir", str(directory), "--daemonize", "no"]


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Yield the URL of an empty Redis database."""
    existing = os.environ.get("EXEC_WATCHDOG_TEST_REDIS_URL")
    if existing:
        yield existing  # the caller flushes the database it was given
        return
    binary = shutil.which("redis-server")
    if not binary:
        raise RuntimeError("redis-server not found: install the Debian package 'redis-server' (make system-deps)")
    tmp = tempfile.mkdtemp(prefix="ew-redis-")
    port = free_port()
    proc = subprocess.Popen(redis_argv(binary, port, tmp), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with _running(proc, port, tmp):
        yield f"redis://127.0.0.1:{port}/0"


@contextlib.contextmanager
def _running(proc: subprocess.Popen[bytes], port: int, tmp: str | Path) -> Iterator[None]:
    """Wait until the server listens; afterwards stop it and remove its directory, whatever happened."""
    try:
        wait_for_port(port, proc=proc)
        yield
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def alertmanager_binary() -> str:
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if not found:
        raise RuntimeError("Alertmanager not found: install the Debian package 'prometheus-alertmanager' "
                           "(make system-deps)")
    return found


@contextlib.contextmanager
def alertmanager_server(config_yaml: str | None = None) -> Iterator[str]:
    """A single real Alertmanager on a free loopback port (no clustering); yields its URL."""
    tmp = Path(tempfile.mkdtemp(prefix="ew-am-"))
    (tmp / "alertmanager.yml").write_text(config_yaml or "route: {receiver: 'null'}\nreceivers: [{name: 'null'}]\n")
    port = free_port()
    proc = subprocess.Popen(
        [alertmanager_binary(), f"--config.file={tmp / 'alertmanager.yml'}", f"--storage.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    with _running(proc, port, tmp):
        yield f"http://127.0.0.1:{port}"
