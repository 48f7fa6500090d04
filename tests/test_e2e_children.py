"""The pipeline's plumbing, fast: generated configurations pass the real Prometheus and Alertmanager
checkers, and child processes never outlive their stop, a crash or the parent itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
import yaml

from exec_watchdog.common.contract import EXPORTER_JOB, REMEDIATOR_JOB
from exec_watchdog.pipeline.children import Child, ChildCrashed, Children, MissingBinary, NotReady, find_binary
from exec_watchdog.pipeline.configs import alertmanager_config, prometheus_config
from exec_watchdog.pipeline.stack import StackOptions
from exec_watchdog.testbed.waiting import eventually


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def test_prometheus_config_passes_promtool_with_the_rendered_rules(tmp_path: Path) -> None:
    from exec_watchdog.alerts.render import render_rules

    rules = tmp_path / "rules.yml"
    rules.write_text(render_rules("fast"))
    config = tmp_path / "prometheus.yml"
    config.write_text(prometheus_config("fast", rules, ["127.0.0.1:9463"], ["127.0.0.1:9464", "127.0.0.1:9465"],
                                        ["127.0.0.1:9093", "127.0.0.1:9094"]))

    result = subprocess.run([find_binary("promtool"), "check", "config", str(config)], capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr
    parsed = yaml.safe_load(config.read_text())
    assert [job["job_name"] for job in parsed["scrape_configs"]] == [EXPORTER_JOB, REMEDIATOR_JOB]
    assert parsed["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9093",
                                                                                       "127.0.0.1:9094"]
    assert parsed["global"]["scrape_interval"] == "1s"
    assert "external_labels" not in parsed["global"] and "alert_relabel_configs" not in parsed["alerting"]


def test_a_prometheus_replica_labels_its_series_and_drops_the_label_from_alerts(tmp_path: Path) -> None:
    """One server of an HA set scrapes every exporter shard; its replica label never reaches alerts."""
    from exec_watchdog.alerts.render import render_rules

    rules = tmp_path / "rules.yml"
    rules.write_text(render_rules("production"))
    config = tmp_path / "prometheus.yml"
    config.write_text(prometheus_config("production", rules, ["127.0.0.1:9463", "127.0.0.1:9473"],
                                        ["127.0.0.1:9464"], ["127.0.0.1:9093"], replica="prometheus-2"))

    result = subprocess.run([find_binary("promtool"), "check", "config", str(config)], capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr
    parsed = yaml.safe_load(config.read_text())
    assert parsed["global"]["external_labels"] == {"replica": "prometheus-2"}
    assert parsed["alerting"]["alert_relabel_configs"] == [{"action": "labeldrop", "regex": "replica"}]
    assert parsed["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9463", "127.0.0.1:9473"]


def test_alertmanager_config_sends_every_notification_to_every_replica(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    urls = ["http://127.0.0.1:9464/api/v1/alerts", "http://127.0.0.1:9465/api/v1/alerts"]
    config = tmp_path / "alertmanager.yml"
    config.write_text(alertmanager_config("fast", urls, token))

    result = subprocess.run([find_binary("amtool"), "check-config", str(config)], capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr
    receiver = next(r for r in yaml.safe_load(config.read_text())["receivers"] if r["name"] == "remediator")
    assert [w["url"] for w in receiver["webhook_configs"]] == urls
    assert all(w["http_config"]["authorization"]["credentials_file"] == str(token) and w["send_resolved"]
               for w in receiver["webhook_configs"])


def test_alertmanager_config_needs_a_webhook(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        alertmanager_config("fast", [], tmp_path / "token")


def test_unknown_profile_and_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        StackOptions("sqlite:///x.db", "http://a/{agent}", "s", profile="slow")
    with pytest.raises(ValueError, match="from 1 to 5"):
        StackOptions("sqlite:///x.db", "http://a/{agent}", "s", remediators=0)


def test_missing_binary_names_the_packages_to_install() -> None:
    with pytest.raises(MissingBinary, match="apt-get install --no-install-recommends prometheus "
                                            "prometheus-alertmanager"):
        find_binary("no-such-prometheus-binary")


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    """A child's own children (same process group) are gone after stop, not just the child."""
    pidfile = tmp_path / "grandchild.pid"
    child = Child("spawner", ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], tmp_path / "spawner.log",
                  ready=pidfile.exists)
    children = Children()
    children.add(child)
    children.start_all()
    try:
        children.wait_ready(10)
        grandchild = int(eventually(lambda: pidfile.read_text().strip(), 5, "the grandchild wrote its pid"))
        assert _alive(grandchild)
    finally:
        children.stop_all()

    assert child.returncode is not None
    eventually(lambda: not _alive(grandchild), 5, "the grandchild is gone")


def test_a_crash_is_reported_with_name_code_and_last_lines(tmp_path: Path) -> None:
    child = Child("flaky", ["sh", "-c", "echo starting; echo 'bad config: line 3' >&2; exit 3"],
                  tmp_path / "flaky.log", ready=lambda: False)
    children = Children()
    children.add(child)
    children.start_all()
    try:
        with pytest.raises(ChildCrashed) as caught:
            children.wait_ready(10)
    finally:
        children.stop_all()

    assert caught.value.name == "flaky"
    assert caught.value.returncode == 3
    assert caught.value.tail == ["starting", "bad config: line 3"]
    assert "flaky exited with code 3" in str(caught.value)


def test_not_ready_in_time_says_which_child(tmp_path: Path) -> None:
    child = Child("sleepy", ["sleep", "60"], tmp_path / "sleepy.log", ready=lambda: False)
    children = Children()
    children.add(child)
    children.start_all()
    try:
        with pytest.raises(NotReady, match="sleepy"):
            children.wait_ready(0.5)
    finally:
        children.stop_all()
    assert not _alive(child.pid or 0)


def test_children_die_with_a_parent_killed_without_cleanup(tmp_path: Path) -> None:
    """SIGKILL leaves no chance to clean up: the kernel's parent-death signal ends the child."""
    pidfile = tmp_path / "child.pid"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from exec_watchdog.pipeline.children import Child
        child = Child("orphan-to-be", ["sleep", "60"], Path({str(tmp_path / 'c.log')!r}), ready=lambda: True)
        child.start()
        Path({str(pidfile)!r}).write_text(str(child.pid))
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        pid = int(eventually(lambda: pidfile.exists() and pidfile.read_text(), 10, "the parent started its child"))
        assert _alive(pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(5)
        eventually(lambda: not _alive(pid), 5, "the child died with its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
        with_pid = pidfile.read_text() if pidfile.exists() else ""
        if with_pid and _alive(int(with_pid)):
            os.kill(int(with_pid), signal.SIGKILL)
