"""The watchdog's side of the pipeline as child processes: exporter, remediator replicas, real
Alertmanager(s) and a real Prometheus, each on a free loopback port, with data in one directory.

    with Stack(StackOptions(database_url, agent_url_template, secret)) as stack:
        print(stack.prometheus_url, stack.alertmanager_urls, stack.remediator_urls)

All ports are chosen before anything starts, so every child is launched at once and the slow
ones (Prometheus, a settling Alertmanager cluster) start in parallel. ``wait_ready`` returns once
Prometheus scrapes every target and knows every Alertmanager, so alerts can flow end to end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from exec_watchdog.alerts.render import duration_seconds, profile_settings, render_rules
from exec_watchdog.pipeline.children import Child, Children, find_binary, free_port, http_ok
from exec_watchdog.pipeline.configs import alertmanager_config, prometheus_config

PROMETHEUS = ("prometheus",)
ALERTMANAGER = ("prometheus-alertmanager", "alertmanager")  # the Debian package's name first


def check_binaries() -> None:
    """Raise :class:`exec_watchdog.pipeline.children.MissingBinary` unless Prometheus and Alertmanager are installed."""
    find_binary(*PROMETHEUS)
    find_binary(*ALERTMANAGER)


@dataclass(frozen=True)
class StackOptions:
    database_url: str
    agent_url_template: str
    agent_secret: str
    profile: str = "fast"
    redis_url: str | None = None  # capacity slots and announcements in Redis, as Trinity has them
    alertmanagers: int = 1  # 2 or more form a cluster (gossip on loopback)
    remediators: int = 1  # every replica gets every notification
    log_level: str = "info"
    remediator_flags: tuple[str, ...] = ()  # extra flags for every replica (e.g. --dry-run)
    exporter_flags: tuple[str, ...] = ()  # extra flags for the exporter
    remediation_group_interval: str | None = None  # overrides the profile's, e.g. "5s" for HA runs
    exporter_shards: int = 1  # N exporters, each --shard K/N, all scraped by every Prometheus
    prometheus_replicas: int = 1  # an HA set: same rules, own replica label, dropped for alerts

    def __post_init__(self) -> None:
        if not all(1 <= n <= 5 for n in (self.alertmanagers, self.remediators, self.exporter_shards,
                                         self.prometheus_replicas)):
            raise ValueError("alertmanagers, remediators, exporter shards and Prometheus replicas must each be "
                             "from 1 to 5")
        profile_settings(self.profile)  # a clear error for an unknown profile


def _with_remediation_group_interval(config_text: str, interval: str) -> str:
    config = yaml.safe_load(config_text)
    for route in config["route"]["routes"]:
        if route["receiver"] == "remediator":
            route["group_interval"] = interval
    return str(yaml.safe_dump(config, sort_keys=False))


def _get_json(url: str) -> Any:
    try:
        response = httpx.get(url, timeout=1.0)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


class Stack:
    def __init__(self, options: StackOptions, workdir: Path | None = None) -> None:
        self.options = options
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="exec-watchdog-"))
        self.token = secrets.token_urlsafe(24)
        self.settings = profile_settings(options.profile)
        # Binaries first: a missing one is an error before anything starts.
        self._prometheus_bin = find_binary(*PROMETHEUS)
        self._alertmanager_bin = find_binary(*ALERTMANAGER)
        self._prometheus_ports = [free_port() for _ in range(options.prometheus_replicas)]
        self._exporter_ports = [free_port() for _ in range(options.exporter_shards)]
        self._remediator_ports = [free_port() for _ in range(options.remediators)]
        self._am_ports = [free_port() for _ in range(options.alertmanagers)]
        self._cluster_ports = [free_port() for _ in range(options.alertmanagers)] if options.alertmanagers > 1 else []
        self.prometheus_urls = [f"http://127.0.0.1:{p}" for p in self._prometheus_ports]
        self.exporter_urls = [f"http://127.0.0.1:{p}" for p in self._exporter_ports]
        self.prometheus_url = self.prometheus_urls[0]
        self.exporter_url = self.exporter_urls[0]
        self.remediator_urls = [f"http://127.0.0.1:{p}" for p in self._remediator_ports]
        self.alertmanager_urls = [f"http://127.0.0.1:{p}" for p in self._am_ports]
        self.replica_ids = [f"remediator-{i + 1}" for i in range(options.remediators)]
        self.children = Children()
        self.keep_workdir = False  # True keeps configurations, data and logs after stop
        self._started = False

    # -- files --------------------------------------------------------------------------------

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def _secret_file(self, name: str, value: str) -> Path:
        path = self.workdir / "secrets" / name
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=0o600)
        path.write_text(value + "\n")
        return path

    def _child_env(self) -> dict[str, str]:
        # Our flags are the whole configuration: settings from the caller's environment
        # (EXEC_WATCHDOG_*) must not leak into a child and change what it does.
        return {k: v for k, v in os.environ.items() if not k.startswith("EXEC_WATCHDOG_")}

    # -- the children -------------------------------------------------------------------------

    def _python(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "exec_watchdog", "--log-level", self.options.log_level,
                "--log-format", "json", *args]

    def _exporter(self, index: int, secret_file: Path) -> Child:
        o = self.options
        # The exporter must answer within Prometheus' scrape_timeout, and each agent within that.
        scrape_timeout = min(8.0, 0.8 * duration_seconds(str(self.settings["scrape_timeout"])))
        agent_timeout = min(3.0, 0.6 * scrape_timeout)
        argv = self._python("exporter", "--listen", f"127.0.0.1:{self._exporter_ports[index]}", "--database-url",
                            o.database_url, "--agent-url-template", o.agent_url_template, "--agent-secret-file",
                            str(secret_file), "--scrape-timeout", f"{scrape_timeout:g}", "--agent-timeout",
                            f"{agent_timeout:g}", "--advice-window", str(self.settings["advice_window"]))
        if o.redis_url:
            argv += ["--redis-url", o.redis_url]
        # Queued rows are published from half the backlog age on (only rows that can fire).
        argv += ["--queued-publish-after", f"{int(self.settings['backlog_max_age_seconds']) / 2:g}",
                 "--activity-publish-after", f"{int(self.settings['activity_stale_seconds']) / 2:g}"]
        argv += list(o.exporter_flags)
        name, url = "exporter", self.exporter_urls[index]
        if o.exporter_shards > 1:
            argv += ["--shard", f"{index}/{o.exporter_shards}"]
            name = f"exporter-{index + 1}"
        return Child(name, argv, self.logs / f"{name}.log", lambda: http_ok(f"{url}/healthz"),
                     cwd=self.workdir, env=self._child_env())

    def _remediator(self, index: int, secret_file: Path, token_file: Path) -> Child:
        o = self.options
        url = self.remediator_urls[index]
        sweep = min(5.0, max(1.0, duration_seconds(str(self.settings["scrape_interval"]))))
        argv = self._python("remediator", "--listen", f"127.0.0.1:{self._remediator_ports[index]}",
                            "--database-url", o.database_url, "--agent-url-template", o.agent_url_template,
                            "--agent-secret-file", str(secret_file), "--bearer-token-file", str(token_file),
                            "--min-orphan-age", str(self.settings["orphan_min_age_seconds"]),
                            "--claim-defer", str(self.settings["claim_defer_seconds"]),
                            "--backlog-max-age", str(self.settings["backlog_max_age_seconds"]),
                            "--activity-stale-after", str(self.settings["activity_stale_seconds"]),
                            "--stale-grace", str(self.settings["stale_grace_seconds"]),
                            "--stale-unowned", str(self.settings["stale_unowned_seconds"]),
                            "--no-session-age", str(self.settings["no_session_min_age_seconds"]),
                            "--replica-id", self.replica_ids[index], "--sweep-interval", f"{sweep:g}")
        for am in self.alertmanager_urls:
            argv += ["--alertmanager-url", am]
        if o.redis_url:
            argv += ["--redis-url", o.redis_url, "--announce-redis-url", o.redis_url]
        argv += list(o.remediator_flags)
        name = "remediator" if o.remediators == 1 else self.replica_ids[index]
        return Child(name, argv, self.logs / f"{name}.log", lambda: http_ok(f"{url}/readyz"),
                     cwd=self.workdir, env=self._child_env())

    def _alertmanager(self, index: int, config: Path) -> Child:
        home = self.workdir / f"alertmanager-{index + 1}"
        url = self.alertmanager_urls[index]
        argv = [self._alertmanager_bin, f"--config.file={config}", f"--storage.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{self._am_ports[index]}", f"--web.external-url={url}",
                "--log.level=info"]
        if self._cluster_ports:
            argv.append(f"--cluster.listen-address=127.0.0.1:{self._cluster_ports[index]}")
            argv += [f"--cluster.peer=127.0.0.1:{p}" for i, p in enumerate(self._cluster_ports) if i != index]
        else:
            argv.append("--cluster.listen-address=")  # Debian's default would gossip on 0.0.0.0:9094
        name = "alertmanager" if len(self._am_ports) == 1 else f"alertmanager-{index + 1}"
        peers = len(self._am_ports)

        def ready() -> bool:
            status = _get_json(f"{url}/api/v2/status")
            if not isinstance(status, dict):
                return False
            cluster = status.get("cluster") or {}
            if peers == 1:
                return bool(cluster.get("status") == "disabled")
            # A clustered instance holds its notifications back until the gossip has settled.
            return cluster.get("status") == "ready" and len(cluster.get("peers") or []) == peers

        return Child(name, argv, self.logs / f"{name}.log", ready, cwd=home)

    def _prometheus_name(self, index: int) -> str:
        return "prometheus" if self.options.prometheus_replicas == 1 else f"prometheus-{index + 1}"

    def _prometheus(self, index: int, config: Path) -> Child:
        name, url = self._prometheus_name(index), self.prometheus_urls[index]
        home = self.workdir / name
        argv = [self._prometheus_bin, f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{self._prometheus_ports[index]}",
                f"--web.external-url={url}", "--web.enable-lifecycle",
                f"--rules.alert.resend-delay={self.settings['alert_resend_delay']}", "--log.level=info"]
        return Child(name, argv, self.logs / f"{name}.log", lambda: http_ok(f"{url}/-/ready"), cwd=home)

    def start(self) -> None:
        """Write the configurations and launch every child (does not wait: see :meth:`wait_ready`)."""
        if self._started:
            raise RuntimeError("the stack is already started")
        self._started = True
        o = self.options
        secret_file = self._secret_file("agent-secret", o.agent_secret)
        token_file = self._secret_file("remediator-token", self.token)
        prom_configs = []
        for i in range(o.prometheus_replicas):
            prom_home = self.workdir / self._prometheus_name(i)
            prom_home.mkdir(parents=True, exist_ok=True)
            rules = prom_home / "rules.yml"
            rules.write_text(render_rules(o.profile))
            prom_config = prom_home / "prometheus.yml"
            prom_config.write_text(prometheus_config(
                o.profile, rules, [f"127.0.0.1:{p}" for p in self._exporter_ports],
                [f"127.0.0.1:{p}" for p in self._remediator_ports], [f"127.0.0.1:{p}" for p in self._am_ports],
                replica=self._prometheus_name(i) if o.prometheus_replicas > 1 else None))
            prom_configs.append(prom_config)
        am_text = alertmanager_config(o.profile, [f"{u}/api/v1/alerts" for u in self.remediator_urls], token_file)
        if o.remediation_group_interval:
            am_text = _with_remediation_group_interval(am_text, o.remediation_group_interval)
        for i in range(o.alertmanagers):
            home = self.workdir / f"alertmanager-{i + 1}"
            home.mkdir(parents=True, exist_ok=True)
            (home / "alertmanager.yml").write_text(am_text)
            self.children.add(self._alertmanager(i, home / "alertmanager.yml"))
        for i in range(o.remediators):
            self.children.add(self._remediator(i, secret_file, token_file))
        for i in range(o.exporter_shards):
            self.children.add(self._exporter(i, secret_file))
        for i, prom_config in enumerate(prom_configs):
            self.children.add(self._prometheus(i, prom_config))
        self.children.start_all()

    def _prometheus_wired(self) -> bool:
        """Every Prometheus scrapes every target successfully and knows every Alertmanager."""
        return all(self._wired(url) for url in self.prometheus_urls)

    def _wired(self, prometheus_url: str) -> bool:
        targets = _get_json(f"{prometheus_url}/api/v1/targets?state=active")
        managers = _get_json(f"{prometheus_url}/api/v1/alertmanagers")
        if not isinstance(targets, dict) or not isinstance(managers, dict):
            return False
        active = targets.get("data", {}).get("activeTargets", [])
        wanted = self.options.exporter_shards + self.options.remediators
        up = [t for t in active if t.get("health") == "up"]
        known = managers.get("data", {}).get("activeAlertmanagers", [])
        return len(active) == wanted and len(up) == wanted and len(known) == self.options.alertmanagers

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Block until every child is ready and Prometheus is wired to all of them; a crash raises."""
        extra: list[tuple[str, Callable[[], bool]]] = [("prometheus targets", self._prometheus_wired)]
        self.children.wait_ready(timeout, extra)

    def stop(self) -> None:
        """Stop every child (never raises for a child that already died); remove our own work dir."""
        try:
            self.children.stop_all()
        finally:
            if self._own_workdir and not self.keep_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Stack:
        try:
            self.start()
            self.wait_ready()
        except BaseException:
            self.keep_workdir = True
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def summary(self) -> dict[str, Any]:
        """Where everything is, for people."""
        return {
            "prometheus": self.prometheus_url if len(self.prometheus_urls) == 1 else self.prometheus_urls,
            "alertmanager": self.alertmanager_urls,
            "remediator": self.remediator_urls,
            "exporter_metrics": (f"{self.exporter_url}/metrics" if len(self.exporter_urls) == 1
                                 else [f"{u}/metrics" for u in self.exporter_urls]),
            "remediator_metrics": [f"{u}/metrics" for u in self.remediator_urls],
            "recoveries_page": [f"{u}/#token={self.token}" for u in self.remediator_urls],
            "workdir": str(self.workdir),
            "logs": str(self.logs),
        }
