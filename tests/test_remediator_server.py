"""The real `exec-watchdog remediator` process against clients that never finish their headers:
they are dropped after the header timeout, extra connections are refused at once, the service
keeps answering and the log stays short."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from exec_watchdog.testbed.servers import free_port, wait_for_port

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[1]


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_slow_header_clients_are_dropped_and_the_service_keeps_answering(tmp_path: Path) -> None:
    port = free_port()
    stderr = (tmp_path / "stderr").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "exec_watchdog", "remediator", f"--listen=127.0.0.1:{port}",
         f"--database-url=sqlite:///{tmp_path / 'trinity.db'}", "--agent-secret=x", "--insecure-no-auth",
         "--header-timeout=1", "--max-connections=200"],
        cwd=ROOT, stdout=stderr, stderr=stderr)
    slow: list[socket.socket] = []
    try:
        wait_for_port(port, proc=proc)
        for _ in range(1030):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                continue  # refused at the cap: that is the point
            sock.sendall(b"POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
            slow.append(sock)
        started = time.monotonic()
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert health.status_code == 200
        assert time.monotonic() - started < 5
        deadline = time.monotonic() + 10
        for sock in slow:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            assert _closed_by_server(sock), "a client that never finished its headers is still connected"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        stderr.flush()
        lines = (tmp_path / "stderr").read_text().splitlines()
        assert len(lines) < 100, f"{len(lines)} log lines for 1,030 slow clients"
    finally:
        for sock in slow:
            sock.close()
        proc.terminate()
        proc.wait(10)
        stderr.close()
