"""Servers we can break: a PostgreSQL that stops and starts again on the same port and data, a
Redis that pauses and resumes. For the fault tests and the soak."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from exec_watchdog.testbed.servers import (
    free_port,
    init_postgres_cluster,
    postgres_binary,
    redis_argv,
    wait_for_port,
    wait_postgres_ready,
)


class PostgresProcess:
    """A throwaway PostgreSQL that can be stopped and started again on the same port and data.

    ``stop`` is a fast shutdown: every client connection is cut at once and new ones are refused,
    as when a database host goes away; ``start`` brings the same cluster back.
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ew-faults-pg-"))
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._run_as = init_postgres_cluster(self.root)
        self.data = self.root / "data"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("PostgreSQL is already running")
        with open(self.root / "postgres.log", "ab") as log:
            self.process = subprocess.Popen(
                [postgres_binary("postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
                 "-k", str(self.root), "-c", "fsync=off", "-c", "max_connections=300"],
                stdout=log, stderr=log, **self._run_as)
        wait_for_port(self.port, timeout, proc=self.process)
        wait_postgres_ready(self.url, timeout)

    def stop(self) -> None:
        """Fast shutdown: clients are disconnected now, new connections are refused."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RedisProcess:
    """A throwaway redis-server (nothing on disk) that can be paused and resumed.

    Paused (SIGSTOP), it accepts connections in the kernel but answers nothing: clients time out
    and nothing is lost, so slot keys survive the outage as they would on a real Redis.
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ew-faults-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server not found: install the Debian package 'redis-server'")
        self.process = subprocess.Popen(redis_argv(binary, self.port, self.root),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, proc=self.process)

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RedisProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
