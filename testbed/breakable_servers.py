"""Servers we can break: a PostgreSQL that stops and starts again on the same port and data, a
Redis that pauses and resumes, a TCP relay that cuts connections and loses replies. For the fault
tests and the soak."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
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


class TcpRelay:
    """A TCP relay in front of a server (here: PostgreSQL), breakable the way a network is.

    ``stop`` cuts every relayed connection at once and refuses new ones (each is closed as soon as
    it is accepted), as when the path to a database host goes away; ``start`` relays again.
    ``lose_reply_after`` arms a one-shot fault for the moment the harm is worst: the next client
    message containing ``marker``, on a connection whose transaction so far contains ``within``, is
    delivered to the server, the server's answer is read and dropped, and the relay stops for
    ``outage`` seconds. With ``marker=b"COMMIT"`` that is a commit that happened but whose reply
    never came back. Plain threads: callers may block their event loop on the database meanwhile.
    """

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host, self.target_port = host, target_port
        self._listener = socket.create_server((host, 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._running = True
        self._closed = False
        self._armed: tuple[bytes, bytes, float] | None = None
        self.fired_at: float | None = None  # time.monotonic() of the lost reply
        self.restarted_at: float | None = None  # time.monotonic() of the end of that outage
        threading.Thread(target=self._accept, name="tcp-relay-accept", daemon=True).start()

    def url_for(self, url: str) -> str:
        """``url`` (a database URL naming the target port) pointed at the relay instead."""
        return url.replace(f":{self.target_port}/", f":{self.port}/")

    def stop(self) -> None:
        with self._lock:
            self._running = False
            doomed, self._open = self._open, set()
        for sock in doomed:
            _hard_close(sock)

    def start(self) -> None:
        with self._lock:
            self._running = True

    def lose_reply_after(self, marker: bytes, within: bytes, outage: float) -> None:
        with self._lock:
            self._armed = (marker, within, outage)
            self.fired_at = self.restarted_at = None

    def close(self) -> None:
        self._closed = True
        self.stop()
        self._listener.close()

    def __enter__(self) -> TcpRelay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                running = self._running
            if not running:
                _hard_close(client)
                continue
            try:
                server = socket.create_connection((self.host, self.target_port), timeout=5)
            except OSError:
                _hard_close(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._open |= {client, server}
            lose: list[float] = []  # the outage to start when the server answers, once armed
            threading.Thread(target=self._pump_up, args=(client, server, lose), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(server, client, lose), daemon=True).start()

    def _pump_up(self, client: socket.socket, server: socket.socket, lose: list[float]) -> None:
        """Client to server; watches for the armed marker."""
        transaction = b""
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            if not data:
                return self._drop(client, server)
            transaction = (transaction + data)[-65536:]
            with self._lock:
                armed = self._armed
                if armed is not None and armed[0] in data and armed[1] in transaction:
                    self._armed = None
                    lose.append(armed[2])  # before the server can answer: the answer is the one to lose
            if b"COMMIT" in data or b"ROLLBACK" in data:
                transaction = b""
            try:
                server.sendall(data)
            except OSError:
                return self._drop(client, server)

    def _pump_down(self, server: socket.socket, client: socket.socket, lose: list[float]) -> None:
        while True:
            try:
                data = server.recv(65536)
            except OSError:
                data = b""
            if not data:
                return self._drop(client, server)
            if lose:
                self.fired_at = time.monotonic()
                self.stop()
                timer = threading.Timer(lose[0], self._restart)
                timer.daemon = True
                timer.start()
                return None
            try:
                client.sendall(data)
            except OSError:
                return self._drop(client, server)

    def _restart(self) -> None:
        self.restarted_at = time.monotonic()
        self.start()

    def _drop(self, *socks: socket.socket) -> None:
        with self._lock:
            self._open -= set(socks)
        for sock in socks:
            _hard_close(sock)


def _hard_close(sock: socket.socket) -> None:
    """Cut the connection: the peer's next read fails at once. ``shutdown`` first, as a thread may be
    blocked reading this socket (a bare close would leave the connection open until it returns)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
