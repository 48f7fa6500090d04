"""`exec-watchdog demo` as people run it (`make run`): recoveries within seconds, a clean stop on
--duration and on Ctrl-C, a crashed child reported, and no process left behind in any case."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.timeout(300)

DEMO = [sys.executable, "-m", "exec_watchdog", "--log-format", "console", "demo"]
QUICK = ["--agents", "3", "--restart-every", "0", "--outage-every", "0", "--seed", "7"]


class Demo:
    """A running demo; its stdout is read line by line, its descendants are remembered."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([*DEMO, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env, start_new_session=True)
        self.lines: list[str] = []
        self.descendants: dict[int, psutil.Process] = {}
        self._selector = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)
        self._partial = ""

    def _remember_descendants(self) -> None:
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.descendants.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    def read(self, timeout: float) -> None:
        self._remember_descendants()
        assert self.proc.stdout is not None
        for _ in self._selector.select(timeout):
            chunk = self.proc.stdout.read()
            if chunk:
                text = self._partial + chunk
                *done, self._partial = text.split("\n")
                self.lines += done

    def wait_for_line(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((line for line in self.lines if needle in line), None)
            if found:
                return found
            if self.proc.poll() is not None:
                self.read(0.1)
                break
            self.read(0.2)
        found = next((line for line in self.lines if needle in line), None)
        assert found, f"no line with {needle!r} in:\n" + "\n".join(self.lines) + f"\nstderr: {self.stderr()}"
        return found

    def finish(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.read(0.2)
        self.read(0.1)
        if self.proc.poll() is None:
            self.kill()
            raise AssertionError("the demo did not stop in time:\n" + "\n".join(self.lines[-20:]))
        return self.proc.returncode

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()

    def kill(self) -> None:
        for process in [psutil.Process(self.proc.pid), *self.descendants.values()]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        self.proc.wait(10)

    def leftovers(self) -> list[str]:
        alive = []
        for process in self.descendants.values():
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(" ".join(process.cmdline()[:3]))
            except psutil.NoSuchProcess:
                pass
        return alive


@pytest.fixture
def demos() -> Iterator[list[Demo]]:
    started: list[Demo] = []
    yield started
    for demo in started:
        if demo.proc.poll() is None:
            demo.kill()


def test_demo_shows_recoveries_and_stops_after_duration(demos: list[Demo]) -> None:
    """With --duration the demo prints where everything is, recoveries of both kinds with their
    time from the fault, summaries, and exits 0 leaving no process and no work dir behind."""
    demo = Demo("--duration", "30", "--rate", "2", "--faults", "lose_report=0.3,hang=0.1,late_report=0.1",
                "--timeout", "8", "--summary-every", "5", *QUICK)
    demos.append(demo)
    header = demo.wait_for_line("#token=", 60)
    assert header.split()[0] == "remediator"
    demo.wait_for_line("Prometheus", 1)
    orphan = demo.wait_for_line("orphan failed", 40)
    assert "after the fault" in orphan and "(detected after " in orphan
    overdue = demo.wait_for_line("overdue terminated", 40)
    # An overdue run is lost when it passes its timeout: the demo's fault time, and where the
    # remediator's "detected after" counts from. The two figures agree.
    times = re.search(r"([\d.]+) s after the fault \(detected after ([\d.]+) s\)", overdue)
    assert times, overdue
    assert abs(float(times.group(1)) - float(times.group(2))) <= 0.2, overdue
    demo.wait_for_line("summary", 10)

    assert demo.finish(40) == 0, demo.stderr()
    assert demo.leftovers() == []
    assert any("ExecWatchdogExecutionOrphaned" in line for line in demo.lines)
    logs = Path(demo.wait_for_line("logs in ", 0).split("logs in ")[1].split(")")[0])
    assert logs.name == "logs"
    assert not logs.parent.parent.exists(), "the temporary work dir is removed after a clean run"


def test_demo_shows_a_recovery_from_each_cleanup_path(demos: list[Demo]) -> None:
    """The demo injects a skipped row, an expired queued row, an unclosed activity, leaked slots and
    slots taken past their TTL, and shows each one's recovery within its first minute (the issue
    asks for three). An expired slot whose run the agent lists is removed without an announcement,
    as in Trinity: the account reads it from the audit."""
    demo = Demo("--duration", "45", "--rate", "0.5", "--faults", "lose_report=0.2,leak_slot=0.25,expire_slot=0.3",
                "--cleanup-faults-every", "20", "--advice-schedules", "off", *QUICK)
    demos.append(demo)
    demo.wait_for_line("#token=", 60)
    for words in ("skipped row finalized", "queued row expired", "stale activity failed"):
        line = demo.wait_for_line(words, 60)
        assert "Marked as failed" in line or "Finalized by cleanup" in line or "Backlog expired" in line, line
    assert "exactly that slot released" in demo.wait_for_line("leaked slot released", 30)
    assert "the agent still lists the run" in demo.wait_for_line("expired slot removed", 30)
    demo.proc.send_signal(signal.SIGINT)  # everything asked for is shown: no need to wait out --duration
    assert demo.finish(30) == 0, demo.stderr()


def test_demo_shows_an_agent_gone_for_good_ended_by_trinitys_stale_and_no_session_sweeps(demos: list[Demo]) -> None:
    """An agent removed for good: its silent launch failure and its stale runs are failed with
    Trinity's texts within the demo's first three minutes."""
    demo = Demo("--duration", "90", "--rate", "1", "--faults", "late_report=0.1", "--agent-timeout", "6",
                "--run-seconds", "20,30", "--timeout", "60", "--remove-agent-at", "8", *QUICK)
    demos.append(demo)
    demo.wait_for_line("#token=", 60)
    demo.wait_for_line("removed for good", 40)
    line = demo.wait_for_line("silent launch failure failed", 60)
    assert "Silent launch failure: no Claude session created within 5 seconds" in line
    line = demo.wait_for_line("stale run failed", 60)
    assert "Marked as failed by cleanup: exceeded 9s stale timeout" in line
    demo.proc.send_signal(signal.SIGINT)
    assert demo.finish(30) == 0, demo.stderr()


def test_ctrl_c_stops_everything(demos: list[Demo]) -> None:
    """SIGINT (Ctrl-C) during the run stops every child and exits 0."""
    demo = Demo(*QUICK)
    demos.append(demo)
    demo.wait_for_line("#token=", 60)
    demo.read(0.5)
    assert len(demo.descendants) >= 4, demo.descendants

    demo.proc.send_signal(signal.SIGINT)

    assert demo.finish(30) == 0, demo.stderr()
    assert demo.leftovers() == []


def test_crashed_child_is_reported_and_ends_the_demo(demos: list[Demo], tmp_path: Path) -> None:
    """When a child dies the demo says which one, with its exit code and last log lines, stops the
    others, keeps its logs and exits 1."""
    demo = Demo("--workdir", str(tmp_path / "demo"), *QUICK)
    demos.append(demo)
    demo.wait_for_line("#token=", 60)
    demo.read(0.5)
    remediator = next(p for p in demo.descendants.values() if "remediator" in p.cmdline())

    remediator.kill()

    assert demo.finish(30) == 1
    stderr = demo.stderr()
    assert "remediator exited with code -9" in stderr, stderr
    assert "remediator_started" in stderr  # the tail of its log
    assert f"kept in {tmp_path / 'demo'}" in stderr
    assert (tmp_path / "demo" / "pipeline" / "logs" / "remediator.log").is_file()
    assert demo.leftovers() == []


def test_missing_prometheus_says_what_to_install(tmp_path: Path) -> None:
    """Without the Debian binaries the demo starts nothing and prints the apt-get line."""
    env = {**os.environ, "PATH": str(tmp_path)}
    result = subprocess.run([*DEMO, "--duration", "5"], capture_output=True, text=True, env=env, timeout=60)

    assert result.returncode == 1
    assert "apt-get install --no-install-recommends prometheus prometheus-alertmanager" in result.stderr
