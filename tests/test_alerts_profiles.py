"""The tunables file, the render API the demo uses, and the `python -m exec_watchdog.alerts.render` command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exec_watchdog.alerts import render
from exec_watchdog.alerts.profiles import (
    PROFILES,
    PROFILES_FILE,
    ProfileError,
    duration_seconds,
    load_file,
    load_profile,
    profile_settings,
    tunable_docs,
    tunable_names,
)

PROJECT = Path(render.__file__).resolve().parent.parent


def test_every_tunable_has_a_doc_and_a_value_in_every_profile() -> None:
    raw = yaml.safe_load(PROFILES_FILE.read_text())
    assert list(raw) == list(tunable_names())
    for name, entry in raw.items():
        assert set(entry) == {"doc", *PROFILES}, name
    assert all(len(doc) > 30 for doc in tunable_docs().values())


def test_production_keeps_trinitys_numbers() -> None:
    production = load_profile("production")
    assert production.orphan_min_age_seconds >= 60  # Trinity never calls a run younger than 60 s orphaned
    assert production.overdue_default_timeout_seconds == 3600
    assert production.stuck_threshold_seconds == 30 * 60
    # Trinity's cleanup sweeps: SLOT_TTL_BUFFER, EXECUTION_STALE_TIMEOUT_MINUTES, NO_SESSION_TIMEOUT_SECONDS.
    assert (production.stale_grace_seconds, production.stale_unowned_seconds) == (300, 7200)
    assert production.no_session_min_age_seconds == 60
    # Above the HA peer timeout (15 s), or a pair sends a stale "firing" after "resolved".
    assert production.seconds("group_interval") >= 20


def test_fast_profile_detects_within_seconds() -> None:
    fast = load_profile("fast")
    detection = ("scrape_interval", "evaluation_interval", "orphan_for", "overdue_for", "group_wait")
    assert sum(fast.seconds(t) for t in detection) + fast.orphan_min_age_seconds <= 10


def test_profile_settings_gives_the_demo_every_tunable_by_name() -> None:
    settings = profile_settings("fast")
    assert set(settings) == set(tunable_names())
    assert settings["scrape_interval"] == "1s" and settings["evaluation_interval"] == "1s"
    assert duration_seconds(str(settings["repeat_interval"])) == 5
    assert render.PROFILES == PROFILES == ("fast", "production")


def test_an_unknown_profile_is_a_clear_error() -> None:
    with pytest.raises(ProfileError, match="unknown profile 'staging': choose one of fast, production"):
        render.render_rules("staging")


@pytest.mark.parametrize(("text", "value"), [("0s", 0), ("90s", 90), ("1h30m", 5400), ("500ms", 0.5), ("2d", 172800)])
def test_durations_parse_like_prometheus(text: str, value: float) -> None:
    assert duration_seconds(text) == value


@pytest.mark.parametrize("text", ["", "5", "1.5s", "5 m", "m", "30s1m"])
def test_a_malformed_duration_is_a_clear_error(text: str) -> None:
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        duration_seconds(text)


def _broken_profiles(tmp_path: Path, edit: str, replacement: str) -> Path:
    text = PROFILES_FILE.read_text()
    assert edit in text
    path = tmp_path / "profiles.yml"
    path.write_text(text.replace(edit, replacement, 1))
    return path


@pytest.mark.parametrize(("edit", "replacement", "message"), [
    ("  production: 15s\n", "", r"scrape_interval must have exactly the keys doc, fast, production"),
    ("  doc: How often Prometheus scrapes", "  dok: How often Prometheus scrapes", "exactly the keys"),
    ("orphan_min_age_seconds:", "orphan_min_age:", r"missing tunables \['orphan_min_age_seconds'\]"),
    ("  fast: 3\n", "  fast: three\n", r"orphan_min_age_seconds.fast: expected a positive whole number"),
    ("  production: 1m\n", "  production: a minute\n", r"alert_resend_delay.production: not a Prometheus duration"),
    ("  production: 10s\n", "  production: 20s\n", "scrape_timeout must not exceed scrape_interval"),
    ("  fast: 5s\n", "  fast: 1s\n", "remediator_failing_window must span at least two scrapes"),
    ("scrape_interval:\n", "scrape_interval: [\n", "cannot read the tunables"),
    ("  fast: 4s\n", "  fast: 2s\n", "stale_for must be longer than fleet_unreachable_for plus one evaluation"),
    ("  fast: 50\n", "  fast: 101\n", "fleet_unreachable_percent is a share of the fleet: at most 100"),
])
def test_a_broken_profiles_file_is_a_clear_error(tmp_path: Path, edit: str, replacement: str, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        load_file(_broken_profiles(tmp_path, edit, replacement))


def test_an_unknown_tunable_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yml"
    path.write_text(PROFILES_FILE.read_text() + "\nsurprise:\n  doc: x\n  fast: 1s\n  production: 1s\n")
    with pytest.raises(ProfileError, match=r"unknown tunables \['surprise'\]"):
        load_file(path)


@pytest.mark.parametrize(("url", "credentials"), [
    ("remediator:9464/api/v1/alerts", "/run/token"),
    ("ftp://remediator/api/v1/alerts", "/run/token"),
    ("http://remediator:9464/api/v1/alerts", " "),
])
def test_alertmanager_config_refuses_a_bad_webhook_url_or_token_file(url: str, credentials: str) -> None:
    with pytest.raises(ValueError, match=r"webhook_url|credentials_file"):
        render.render_alertmanager_config(url, credentials, "production")


def test_alertmanager_config_sends_remediation_with_the_token_file_and_resolved_notifications() -> None:
    config = yaml.safe_load(render.render_alertmanager_config(
        "http://127.0.0.1:9464/api/v1/alerts", "/run/secrets/token", "production"))
    remediator = next(r for r in config["receivers"] if r["name"] == "remediator")
    assert remediator["webhook_configs"] == [{
        "url": "http://127.0.0.1:9464/api/v1/alerts",
        "send_resolved": True,
        "max_alerts": 0,
        "http_config": {"authorization": {"type": "Bearer", "credentials_file": "/run/secrets/token"}},
    }]
    route = next(r for r in config["route"]["routes"] if r["receiver"] == "remediator")
    assert route["group_by"] == ["alertname", "agent", "execution_id"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("5s", "1m", "5m")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exec_watchdog.alerts.render", *args], cwd=PROJECT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_command_writes_one_profile_with_the_given_webhook(tmp_path: Path) -> None:
    result = _cli("--profile", "fast", "--out", str(tmp_path), "--webhook-url", "http://127.0.0.1:19464/api/v1/alerts",
                  "--credentials-file", str(tmp_path / "token"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "alertmanager-fast.yml", "rules-fast.test.yml", "rules-fast.yml"]
    assert (tmp_path / "rules-fast.yml").read_text() == render.render_rules("fast")
    assert "http://127.0.0.1:19464/api/v1/alerts" in (tmp_path / "alertmanager-fast.yml").read_text()


def test_the_command_check_passes_on_the_committed_files_and_fails_on_a_stale_copy(tmp_path: Path) -> None:
    assert _cli("--check").returncode == 0
    copy = tmp_path / "generated"
    shutil.copytree(render.GENERATED_DIR, copy)
    rules = copy / "rules-production.yml"
    rules.write_text(rules.read_text().replace("for: 1m", "for: 2m", 1))
    result = _cli("--check", "--out", str(copy))
    assert result.returncode == 1
    assert "rules-production.yml" in result.stderr and "python -m exec_watchdog.alerts.render" in result.stderr


def test_the_command_refuses_a_bad_webhook_url_with_a_message(tmp_path: Path) -> None:
    result = _cli("--out", str(tmp_path), "--webhook-url", "not a url")
    assert result.returncode == 2
    assert "webhook_url must be an http(s) URL" in result.stderr
    assert not list(tmp_path.iterdir())
