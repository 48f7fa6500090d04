"""The alert rules and the Alertmanager configuration, checked by Prometheus's and Alertmanager's
own tools (promtool, amtool) for every profile, plus the contract with the exporter's metrics."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from exec_watchdog.alerts import rule_tests, rules, timeout_rules
from exec_watchdog.alerts.alertmanager import HEARTBEAT_RECEIVER, OPERATOR_RECEIVER, REMEDIATOR_RECEIVER
from exec_watchdog.alerts.profiles import PROFILES, load_profile
from exec_watchdog.alerts.render import GENERATED_DIR, render_alertmanager_config, render_files, render_rules
from exec_watchdog.common import contract
from exec_watchdog.common.contract import ExporterMetric as exporter_metrics
from exec_watchdog.common.contract import RemediatorMetric as remediator_metrics
from exec_watchdog.common.contract import ShadowMetric as shadow_metrics
from exec_watchdog.exporter import families as exporter_families

RUNBOOK = Path(rules.__file__).with_name("runbook.md")


def require_tool(name: str) -> str:
    """The path of a Debian-packaged tool; a missing one fails the run (CI installs it), never skips."""
    found = shutil.which(name) or shutil.which(name, path="/usr/bin")
    if found is None:
        pytest.fail(f"{name} is not installed: run `make system-deps` (CI installs it)", pytrace=False)
    return found


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def rendered_rules(profile: str, *, recording: bool = False) -> list[dict[str, Any]]:
    """The alert rules of the rendered file (and the recording rules with ``recording``)."""
    document = yaml.safe_load(render_rules(profile))
    return [rule for group in document["groups"] for rule in group["rules"] if recording or "alert" in rule]


def test_a_missing_tool_fails_the_run_and_says_to_run_make_system_deps() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"run `make system-deps`"):
        require_tool("promtool-that-is-not-installed")


# --- promtool ---------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_promtool_accepts_the_rule_file(profile: str, tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(render_rules(profile))
    result = run(require_tool("promtool"), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    recorded = len(timeout_rules.recording_rules(load_profile(profile)))
    assert f"SUCCESS: {len(contract.ALERTS) + recorded} rules found" in result.stdout


_CASES = [(p, name) for p in PROFILES for name, _ in rule_tests.cases_for(load_profile(p))]


@pytest.mark.parametrize(("profile", "case"), _CASES, ids=[f"{p}: {name}" for p, name in _CASES])
def test_rule_behaves_as_the_case_says(profile: str, case: str, tmp_path: Path) -> None:
    """One promtool test group per case, so a failure names its sentence."""
    group = next(g for g in rule_tests.promtool_groups(load_profile(profile)) if g["name"] == case)
    (tmp_path / "rules.yml").write_text(render_rules(profile))
    test_file = rule_tests.promtool_file(load_profile(profile), "rules.yml", [group])
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test_file, sort_keys=False))
    result = run(require_tool("promtool"), "test", "rules", "test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("profile_name", PROFILES)
def test_every_alert_has_a_firing_case_and_every_firing_check_a_silent_step_before_it(profile_name: str) -> None:
    profile = load_profile(profile_name)
    step = int(profile.seconds("evaluation_interval"))
    firing: set[str] = set()
    for group in rule_tests.promtool_groups(profile):
        checks = group["alert_rule_test"]
        at = {(c["alertname"], c["eval_time"]): c["exp_alerts"] for c in checks}
        for check in checks:
            if not check["exp_alerts"]:
                continue
            firing.add(check["alertname"])
            fires = int(check["eval_time"].removesuffix("s"))
            if check["alertname"] != contract.HEARTBEAT and fires >= step:
                assert at.get((check["alertname"], f"{fires - step}s")) == [], group["name"]
            for alert in check["exp_alerts"]:
                extra = {contract.UNKNOWN_SINCE_ANNOTATION} if check["alertname"] == contract.ORPHANED else set()
                assert set(alert["exp_annotations"]) == {"summary", "description", "runbook_url", *extra}
    assert firing == set(contract.ALERTS)


# --- the rules' shape and contract ------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_every_alert_has_severity_for_summary_description_and_a_runbook_anchor(profile: str) -> None:
    anchors = {_github_anchor(h) for h in re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), flags=re.M)}
    found = rendered_rules(profile)
    assert [r["alert"] for r in found] == list(contract.ALERTS)
    for rule in found:
        name = rule["alert"]
        assert rule["alert"].startswith("ExecWatchdog")
        assert rule["labels"]["severity"] in {"critical", "warning", "none"}, name
        assert "for" in rule, name
        assert rule["annotations"]["summary"].endswith("."), name
        url, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert url.endswith("alerts/runbook.md") and anchor == name.lower(), name
        assert anchor in anchors, f"alerts/runbook.md has no section for {name}"
        if name == contract.ACTIVITY_STALE:  # names an activity, not an execution
            for label in ("agent", "activity_id", "activity_type"):
                assert f"$labels.{label}" in rule["annotations"]["description"], name
        elif rule["labels"].get("remediation") or name == contract.STUCK:
            slot = name in contract.SLOT_ALERTS  # slots have no schedule
            for label in ("agent", "execution_id") if slot else ("agent", "execution_id", "schedule_id"):
                assert f"$labels.{label}" in rule["annotations"]["description"], name


def test_remediation_alerts_carry_the_contract_labels() -> None:
    labels = {r["alert"]: r["labels"] for r in rendered_rules("production")}
    assert labels[contract.ORPHANED] == {"severity": "critical", "remediation": "fail_orphan"}
    assert labels[contract.OVERDUE] == {"severity": "critical", "remediation": "terminate_overdue"}
    assert labels[contract.COMPLETED_UNREPORTED] == {"severity": "critical", "remediation": "claim_result"}
    assert labels[contract.SLOT_EXPIRED] == {"severity": "critical", "remediation": "reclaim_expired_slot"}
    assert labels[contract.SLOT_EXPIRED_AGENT_UNREACHABLE] == {"severity": "critical",
                                                               "remediation": "reclaim_slot_unreachable"}
    assert labels[contract.SLOT_LEAKED] == {"severity": "warning", "remediation": "release_leaked_slot"}
    assert labels[contract.SKIPPED_UNFINALIZED] == {"severity": "warning", "remediation": "finalize_skipped"}
    assert labels[contract.BACKLOG_EXPIRED] == {"severity": "warning", "remediation": "expire_backlog"}
    assert labels[contract.ACTIVITY_STALE] == {"severity": "warning", "remediation": "fail_stale_activity"}
    assert labels[contract.STALE] == {"severity": "critical", "remediation": "fail_stale"}
    assert labels[contract.NO_SESSION] == {"severity": "critical", "remediation": "fail_no_session"}
    assert [name for name, labels in labels.items() if "remediation" in labels] == list(contract.REMEDIATION_ALERTS)


def _github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


_PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                 "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    aggregations, keywords, label names or strings."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    if "__name__" in text:
        raise ValueError(f"selects metrics by __name__, which this check cannot follow: {expr}")
    text = re.sub(r"\{[^}]*\}", " ", text)    # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)   # range and subquery durations
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+-?\w+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])[A-Za-z_:][\w:]*", text):
        followed_by = text[match.end():].lstrip()[:1]
        if followed_by == "(" or match.group().lower() in _PROMQL_WORDS:
            continue  # a function or aggregation, or a keyword
        names.add(match.group())
    return names


def test_metric_name_parser_finds_selectors_and_skips_functions_keywords_and_labels() -> None:
    expr = ('label_replace(sum by (job, instance) (rate(foo_total{code=~"5..", x="bar"}[5m] offset 1m)) > 0,'
            ' "reason", "baz", "", "") or on (agent) bar_seconds > bool 60 and absent(up{job="qux"})'
            " unless max without (a) (x:recorded)")
    assert metric_names(expr) == {"foo_total", "bar_seconds", "up", "x:recorded"}
    with pytest.raises(ValueError, match="__name__"):
        metric_names('{__name__="sneaky"}')


@pytest.mark.parametrize("profile", PROFILES)
def test_rules_use_only_metrics_the_exporter_and_remediator_publish(profile: str) -> None:
    """A renamed metric must fail here, not silently disarm an alert."""
    duration = exporter_metrics.SCHEDULE_RUN_DURATION
    published = (set(exporter_families.ALL_NAMES) | set(remediator_metrics.ALL) | set(shadow_metrics.ALL) | {"up"}
                 | {f"{duration}_bucket", f"{duration}_count"} | set(timeout_rules.RECORDED))
    used = {name for rule in rendered_rules(profile, recording=True) for name in metric_names(rule["expr"])}
    assert used <= published, f"rules use metrics nobody publishes: {sorted(used - published)}"
    # The parser really found the rules' metrics (an empty set would pass the check above).
    assert {exporter_metrics.EXECUTION_RUNTIME, exporter_metrics.EXECUTION_AGENT_KNOWN,
            exporter_metrics.EXECUTION_TIMEOUT, exporter_metrics.AGENT_UP, exporter_metrics.DATABASE_UP,
            exporter_metrics.EXECUTION_RECENTLY_COMPLETED, exporter_metrics.EXECUTION_DISPATCH_INFLIGHT,
            exporter_metrics.EXECUTION_STALE_OVERRUN, exporter_metrics.EXECUTION_SESSIONLESS_RUNTIME,
            remediator_metrics.REQUESTS, remediator_metrics.REMEDIATIONS, remediator_metrics.BREAKER_OPEN,
            "up", f"{duration}_bucket", f"{duration}_count", exporter_metrics.SCHEDULE_RUNS_ENDED_BY_WATCHDOG,
            exporter_metrics.SCHEDULE_TIMEOUT, exporter_metrics.SCHEDULE_SUCCESSFUL_RUNS_BEFORE_WINDOW,
            exporter_metrics.SCHEDULE_RUNS_ENDED_BEFORE_WINDOW, *timeout_rules.RECORDED, exporter_metrics.SLOT_AGE,
            exporter_metrics.SLOT_TTL, exporter_metrics.SLOT_LEAKED, exporter_metrics.SLOTS_PAUSED,
            exporter_metrics.SKIPPED_UNFINALIZED_AGE, exporter_metrics.QUEUED_AGE,
            exporter_metrics.ACTIVITY_STARTED_AGE, shadow_metrics.VERDICTS} == used


# --- the committed files ----------------------------------------------------------------------

def test_committed_generated_files_equal_the_render_output() -> None:
    expected = {name: text for p in PROFILES for name, text in render_files(p).items()}
    committed = {path.name: path.read_text() for path in GENERATED_DIR.glob("*.yml")}
    assert sorted(committed) == sorted(expected)
    stale = [name for name in expected if committed[name] != expected[name]]
    assert not stale, f"stale, run `python -m exec_watchdog.alerts.render`: {stale}"


# --- amtool -----------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("receivers", [{}, {"operator_webhook_url": "http://pager.example:8080/hook",
                                            "heartbeat_webhook_url": "https://deadman.example/ping"}],
                         ids=["placeholder receivers", "operator and heartbeat webhooks"])
def test_amtool_accepts_the_alertmanager_config(profile: str, receivers: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text(render_alertmanager_config("http://127.0.0.1:9464/api/v1/alerts", "/run/token", profile,
                                               **receivers))
    result = run(require_tool("amtool"), "check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 receivers" in result.stdout and "4 inhibit rules" in result.stdout


# Where each alert must go; labels come from the rendered rules, so a rule losing its
# remediation label fails here too.
ROUTES = {
    contract.ORPHANED: REMEDIATOR_RECEIVER,
    contract.OVERDUE: REMEDIATOR_RECEIVER,
    contract.COMPLETED_UNREPORTED: REMEDIATOR_RECEIVER,
    contract.STUCK: OPERATOR_RECEIVER,
    contract.AGENT_UNREACHABLE: OPERATOR_RECEIVER,
    contract.EXPORTER_DOWN: OPERATOR_RECEIVER,
    contract.DATABASE_UNREACHABLE: OPERATOR_RECEIVER,
    contract.REMEDIATOR_FAILING: OPERATOR_RECEIVER,
    contract.BREAKER_OPEN: OPERATOR_RECEIVER,
    contract.HEARTBEAT: HEARTBEAT_RECEIVER,
    contract.TIMEOUT_TOO_TIGHT: OPERATOR_RECEIVER,  # warnings about configuration: never remediated
    contract.TIMEOUT_TOO_LOOSE: OPERATOR_RECEIVER,
    contract.SLOT_EXPIRED: REMEDIATOR_RECEIVER,
    contract.SLOT_EXPIRED_AGENT_UNREACHABLE: REMEDIATOR_RECEIVER,
    contract.SLOT_LEAKED: REMEDIATOR_RECEIVER,
    contract.SKIPPED_UNFINALIZED: REMEDIATOR_RECEIVER,  # the row alone decides: no agent is asked
    contract.BACKLOG_EXPIRED: REMEDIATOR_RECEIVER,
    contract.ACTIVITY_STALE: REMEDIATOR_RECEIVER,
    contract.STALE: REMEDIATOR_RECEIVER,
    contract.NO_SESSION: REMEDIATOR_RECEIVER,
    contract.FLEET_UNREACHABLE: OPERATOR_RECEIVER,  # pages a person; it only holds remediation
    contract.SHADOW_DISAGREEMENT: OPERATOR_RECEIVER,  # a person reads it; shadow mode changes nothing
}


@pytest.mark.parametrize("profile", PROFILES)
def test_amtool_routes_each_alert_to_its_receiver(profile: str, tmp_path: Path) -> None:
    assert set(ROUTES) == set(contract.ALERTS)
    config = tmp_path / "alertmanager.yml"
    config.write_text(render_alertmanager_config("http://127.0.0.1:9464/api/v1/alerts", "/run/token", profile))
    amtool = require_tool("amtool")
    for rule in rendered_rules(profile):
        labels = {"alertname": rule["alert"], "agent": "agent-a", "execution_id": "exec-1", **rule["labels"]}
        argv = [f"{k}={v}" for k, v in labels.items()]
        result = run(amtool, "config", "routes", "test", f"--config.file={config}",
                     f"--verify.receivers={ROUTES[rule['alert']]}", *argv)
        assert result.returncode == 0, f"{rule['alert']}: {result.stdout}{result.stderr}"
        assert result.stdout.strip() == ROUTES[rule["alert"]]


def test_amtool_route_check_fails_for_a_wrong_receiver(tmp_path: Path) -> None:
    """The routing test above can fail: amtool exits non-zero on a mismatch."""
    config = tmp_path / "alertmanager.yml"
    config.write_text(render_alertmanager_config("http://127.0.0.1:9464/api/v1/alerts", "/run/token", "fast"))
    result = run(require_tool("amtool"), "config", "routes", "test", f"--config.file={config}",
                 f"--verify.receivers={OPERATOR_RECEIVER}", "remediation=fail_orphan", f"alertname={contract.ORPHANED}")
    assert result.returncode != 0
