"""promtool cases for the timeout advice (alerts/timeout_rules.py), registered with alerts/rule_tests.py.

Expected quantiles and advised timeouts are computed by ``exec_watchdog.alerts.advice`` (the code
``exec-watchdog advise`` runs) from the same runs the input series describe, so each case also
checks that the rules and the command agree. Texts are written out, as in rule_tests.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from exec_watchdog.alerts import advice, timeout_rules
from exec_watchdog.alerts.profiles import Profile
from exec_watchdog.alerts.rule_tests import EXPORTER_INSTANCE, Timeline, boundary, case, runbook, series
from exec_watchdog.common import contract
from exec_watchdog.common.contract import ExporterMetric as exporter
from exec_watchdog.exporter.history import DURATION_BUCKETS

AGENT = "agent-a"
SCHEDULE = "nightly"
_LE = [("+Inf" if b == float("inf") else f"{b:g}") for b in DURATION_BUCKETS]


def _schedule(p: Profile) -> dict[str, str]:
    return {"job": contract.EXPORTER_JOB, "instance": EXPORTER_INSTANCE, "agent": AGENT, "schedule_id": SCHEDULE}


def cumulative(durations: Sequence[float]) -> list[int]:
    """Cumulative bucket counts of ``durations``, as the exporter publishes them."""
    return [sum(1 for d in durations if d <= bound) for bound in DURATION_BUCKETS]


def sample_count(values: str) -> int:
    """How many samples a promtool values text expands to ("1x3" is four, "0 5" two)."""
    count = 0
    for token in values.split():
        _start, times, repeat = token.partition("x")
        count += int(repeat) + 1 if times else 1
    return count


def histogram_series(p: Profile, durations: Sequence[float], values: str | None = None,
                     status: str = "success", before: Sequence[float] = (),
                     before_values: str | None = None) -> list[dict[str, str]]:
    """One series per bucket plus _count, constant at ``durations``' counts (or following ``values``,
    a promtool expression where ``{n}`` stands for the bucket's count); for successful runs also the
    exporter's before-window counters, constant at ``before``'s counts (none by default) or following
    ``before_values``."""
    labels = {**_schedule(p), "status": status}
    out = []
    for le, count in zip(_LE, cumulative(durations), strict=True):
        text = values.format(n=count) if values else f"{count}x1"
        out.append(series(f"{exporter.SCHEDULE_RUN_DURATION}_bucket", {**labels, "le": le}, text))
    total = len(durations)
    count_text = values.format(n=total) if values else f"{total}x1"
    out.append(series(f"{exporter.SCHEDULE_RUN_DURATION}_count", labels, count_text))
    if status == "success":
        out += before_series(p, before, before_values or f"{{n}}x{sample_count(count_text) - 1}")
    return out


def before_series(p: Profile, durations: Sequence[float], values: str) -> list[dict[str, str]]:
    """The exporter's counts of successful runs completed before the window, one series per bucket."""
    return [series(exporter.SCHEDULE_SUCCESSFUL_RUNS_BEFORE_WINDOW, {**_schedule(p), "le": le}, values.format(n=count))
            for le, count in zip(_LE, cumulative(durations), strict=True)]


def _steady(n: int) -> str:
    return "{n}x" + str(n)


def reference(durations: Sequence[float]) -> tuple[dict[float, float], int]:
    """Quantiles and advised timeout, as alerts.advice computes them for ``exec-watchdog advise``."""
    counts = cumulative(durations)
    quantiles = {q: advice.histogram_quantile(q, DURATION_BUCKETS, counts) for q in advice.QUANTILES}
    return quantiles, advice.advised_timeout(quantiles[advice.ADVICE_QUANTILE])


# Successful runs of a schedule whose runs take 40-50 minutes: p99 ~ 49 min, advised ~ 74 min.
SLOW = [2400 + 600 * i / 39 for i in range(40)]


@case("Timeout advice: quantiles and the advised timeout are recorded from a schedule's successful runs")
def advice_recorded(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    at = 4 * t.step
    quantiles, advised = reference(SLOW)
    sample = {"agent": AGENT, "schedule_id": SCHEDULE}
    expected = [
        {"expr": timeout_rules.RUNS, "eval_time": f"{at}s", "exp_samples": [{"labels": _labels(
            timeout_rules.RUNS, sample), "value": len(SLOW)}]},
        {"expr": timeout_rules.ADVISED, "eval_time": f"{at}s", "exp_samples": [{"labels": _labels(
            timeout_rules.ADVISED, sample), "value": advised}]},
    ]
    for q, value in quantiles.items():
        expected.append({"expr": f'{timeout_rules.QUANTILE}{{quantile="{q:g}"}}', "eval_time": f"{at}s",
                         "exp_samples": [{"labels": _labels(timeout_rules.QUANTILE, {**sample, "quantile": f"{q:g}"}),
                                          "value": value}]})
    return {"input_series": histogram_series(p, SLOW, _steady(t.steps(at))), "alert_rule_test": [],
            "promql_expr_test": expected}


@case("Timeout advice: none from advice_min_runs - 1 successful runs, advice at advice_min_runs")
def advice_min_runs(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    need = p.advice_min_runs
    runs = [100.0] * need
    # The runs complete one per evaluation: n runs at n * step.
    values = {le: " ".join(str(min(i, c)) for i in range(need + 3)) for le, c in zip(_LE, cumulative(runs),
                                                                                     strict=True)}
    labels = {**_schedule(p), "status": "success"}
    input_series = [series(f"{exporter.SCHEDULE_RUN_DURATION}_bucket", {**labels, "le": le}, text)
                    for le, text in values.items()]
    input_series.append(series(f"{exporter.SCHEDULE_RUN_DURATION}_count", labels,
                               " ".join(str(i) for i in range(need + 3))))
    input_series += before_series(p, [], f"0x{need + 2}")
    sample = {"agent": AGENT, "schedule_id": SCHEDULE}
    return {
        "input_series": input_series, "alert_rule_test": [],
        "promql_expr_test": [
            {"expr": timeout_rules.ADVISED, "eval_time": f"{(need - 1) * t.step}s", "exp_samples": []},
            {"expr": timeout_rules.ADVISED, "eval_time": f"{need * t.step}s",
             "exp_samples": [{"labels": _labels(timeout_rules.ADVISED, sample), "value": reference(runs)[1]}]},
        ],
    }


# Evaluated at every step across the whole window: fine for minutes, hours of promtool time for a
# 7-day window at 15 s. tests/test_advice.py checks the production window on a month of history.
@case("Timeout advice: runs older than advice_window no longer count (the exporter counts them before the window)",
      applies=lambda p: p.seconds("advice_window") <= 2000 * p.seconds("evaluation_interval"))
def advice_window(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    window = int(p.seconds("advice_window"))
    # All runs complete by 1 step; nothing after. At 1 step + window they have left the window.
    leaves = t.step + window
    n = t.steps(leaves)
    m = leaves // t.step  # the first sample at which the exporter counts them before the window
    sample = {"agent": AGENT, "schedule_id": SCHEDULE}
    return {
        "input_series": histogram_series(p, SLOW, "0 {n}x" + str(n), before=SLOW,
                                         before_values=f"0x{m - 1} {{n}}x{n + 1 - m}"),
        "alert_rule_test": [],
        "promql_expr_test": [
            {"expr": timeout_rules.RUNS, "eval_time": f"{leaves - t.step}s",
             "exp_samples": [{"labels": _labels(timeout_rules.RUNS, sample), "value": len(SLOW)}]},
            {"expr": timeout_rules.RUNS, "eval_time": f"{leaves}s",
             "exp_samples": [{"labels": _labels(timeout_rules.RUNS, sample), "value": 0}]},
        ],
    }


def _labels(metric: str, labels: dict[str, str]) -> str:
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _how() -> str:
    return (f"p99 x {advice.MARGIN:g}, rounded up to {advice.ROUND_TO_SECONDS} s, within "
            f"[{advice.MIN_TIMEOUT_SECONDS} s, {advice.MAX_TIMEOUT_SECONDS} s]")


def _tight_alert(p: Profile, terminated: int, p99: float, timeout: int, advised: int) -> dict[str, Any]:
    return {
        "exp_labels": {"agent": AGENT, "schedule_id": SCHEDULE, "severity": "warning"},
        "exp_annotations": {
            "summary": "A schedule's timeout is killing runs that would have succeeded.",
            "description": (
                f"Schedule {SCHEDULE} on agent {AGENT}: the watchdog auto-terminated {terminated} of its runs in "
                f"the last {p.advice_window}, while its successful runs' p99 is {p99:.0f} s against a timeout "
                f"of {timeout} s. Advised timeout: {advised} s ({_how()})."
            ),
            "runbook_url": runbook(p, contract.TIMEOUT_TOO_TIGHT),
        },
    }


def _ended(p: Profile, action: str, values: str) -> list[dict[str, str]]:
    """The counter of runs the watchdog ended, and its before-window twin (none before the window)."""
    labels = {**_schedule(p), "action": action}
    return [series(exporter.SCHEDULE_RUNS_ENDED_BY_WATCHDOG, labels, values),
            series(exporter.SCHEDULE_RUNS_ENDED_BEFORE_WINDOW, labels, f"0x{sample_count(values) - 1}")]


@case("ExecWatchdogTimeoutTooTight fires timeout_advice_for after a run is auto-terminated while good runs "
      "come within the tight share of the timeout")
def too_tight(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    timeout = 3000  # SLOW's p99 (~2994 s) is far above 80 % of it
    quantiles, advised = reference(SLOW)
    terminated_at = 4 * t.step
    fires = t.fires(terminated_at, "timeout_advice_for")
    n = t.steps(fires)
    return {
        "input_series": [
            *histogram_series(p, SLOW, _steady(n)),
            series(exporter.SCHEDULE_TIMEOUT, _schedule(p), f"{timeout}x{n}"),
            *_ended(p, "auto_terminated", f"0x3 2x{n}"),
            *_ended(p, "orphan_recovered", f"5x{n}"),
        ],
        "alert_rule_test": boundary(contract.TIMEOUT_TOO_TIGHT, fires, t.step,
                                    _tight_alert(p, 2, quantiles[0.99], timeout, advised)),
    }


@case("ExecWatchdogTimeoutTooTight stays silent while good runs stay below the tight share of the timeout")
def too_tight_not_close(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    quantiles, _advised = reference(SLOW)
    timeout = int(quantiles[0.99] / advice.TIGHT_SHARE) + 1  # p99 just below 80 % of it
    late = t.fires(0, "timeout_advice_for") + 5 * t.step
    n = t.steps(late)
    return {
        "input_series": [
            *histogram_series(p, SLOW, _steady(n)),
            series(exporter.SCHEDULE_TIMEOUT, _schedule(p), f"{timeout}x{n}"),
            *_ended(p, "auto_terminated", f"0 3x{n}"),
        ],
        "alert_rule_test": [{"eval_time": f"{late}s", "alertname": contract.TIMEOUT_TOO_TIGHT, "exp_alerts": []}],
    }


@case("ExecWatchdogTimeoutTooLoose fires timeout_advice_for after the timeout reaches loose_factor x the advice")
def too_loose(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    quantiles, advised = reference(SLOW)
    loose = advice.LOOSE_FACTOR * advised
    # One step just below the factor, then at it: the condition starts at 2 steps.
    fires = t.fires(2 * t.step, "timeout_advice_for")
    n = t.steps(fires)
    alert = {
        "exp_labels": {"agent": AGENT, "schedule_id": SCHEDULE, "severity": "warning"},
        "exp_annotations": {
            "summary": "A schedule's timeout is far above its longest successful runs.",
            "description": (
                f"Schedule {SCHEDULE} on agent {AGENT} has a timeout of {loose} s, while its successful runs' "
                f"p99 over the last {p.advice_window} is {quantiles[0.99]:.0f} s: a hung run holds its slot that "
                f"long before the watchdog ends it. Advised timeout: {advised} s ({_how()})."
            ),
            "runbook_url": runbook(p, contract.TIMEOUT_TOO_LOOSE),
        },
    }
    return {
        "input_series": [
            *histogram_series(p, SLOW, _steady(n)),
            series(exporter.SCHEDULE_TIMEOUT, _schedule(p), f"{loose - 1}x1 {loose}x{n}"),
        ],
        "alert_rule_test": boundary(contract.TIMEOUT_TOO_LOOSE, fires, t.step, alert),
    }


# Runs of a schedule whose runs now take about a minute: advice_min_runs of them in the window.
def _recent(p: Profile) -> list[float]:
    return [50.0 + i for i in range(p.advice_min_runs)]


@case("Timeout advice from the first scrape: runs the exporter counts before the window never count, "
      "though Prometheus holds no history yet")
def advice_day_one(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    recent = _recent(p)
    quantiles, advised = reference(recent)
    sample = {"agent": AGENT, "schedule_id": SCHEDULE}
    return {
        "input_series": histogram_series(p, SLOW + recent, _steady(t.steps(2 * t.step)), before=SLOW),
        "alert_rule_test": [],
        "promql_expr_test": [
            {"expr": timeout_rules.RUNS, "eval_time": "0s", "exp_samples": [{"labels": _labels(
                timeout_rules.RUNS, sample), "value": len(recent)}]},
            {"expr": timeout_rules.ADVISED, "eval_time": "0s", "exp_samples": [{"labels": _labels(
                timeout_rules.ADVISED, sample), "value": advised}]},
            {"expr": f'{timeout_rules.QUANTILE}{{quantile="0.99"}}', "eval_time": "0s", "exp_samples": [{
                "labels": _labels(timeout_rules.QUANTILE, {**sample, "quantile": "0.99"}), "value": quantiles[0.99]}]},
        ],
    }


@case("Timeout advice from the first scrape: a schedule whose runs all completed before the window gets none")
def advice_day_one_only_old_runs(p: Profile) -> dict[str, Any]:
    t = Timeline(p)
    late = t.fires(0, "timeout_advice_for") + 2 * t.step
    n = t.steps(late)
    sample = {"agent": AGENT, "schedule_id": SCHEDULE}
    return {
        "input_series": [*histogram_series(p, SLOW, _steady(n), before=SLOW),
                         series(exporter.SCHEDULE_TIMEOUT, _schedule(p), f"86400x{n}")],
        "alert_rule_test": [{"eval_time": f"{late}s", "alertname": contract.TIMEOUT_TOO_LOOSE, "exp_alerts": []}],
        "promql_expr_test": [
            {"expr": timeout_rules.RUNS, "eval_time": "0s", "exp_samples": [{"labels": _labels(
                timeout_rules.RUNS, sample), "value": 0}]},
            {"expr": timeout_rules.ADVISED, "eval_time": f"{late}s", "exp_samples": []},
        ],
    }
