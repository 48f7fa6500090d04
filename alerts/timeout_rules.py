"""Timeouts from evidence: recording rules for each schedule's runtime and advised timeout, and
two warnings when a configured timeout is wrong.

A group of its own, evaluated every ``evaluation_interval``. Per (agent, schedule_id), over the
profile's ``advice_window``:

* ``exec_watchdog_schedule:successful_runs:window``: successful runs completed in the window;
* ``exec_watchdog_schedule:successful_run_duration_seconds:quantile{quantile="0.5|0.95|0.99"}``;
* ``exec_watchdog_schedule:runs_ended_by_watchdog:window{action=...}``;
* ``exec_watchdog_schedule:timeout_seconds:advised``: the formula of ``alerts/advice.py``, only
  with at least ``advice_min_runs`` successful runs in the window.

The window is bounded by the exporter, not by Prometheus' history: beside each counter it
publishes the same count for the runs completed before ``now - --advice-window`` (derived from
the table, like the counter), and the rules subtract one from the other. So from the first scrape
after installation the rules judge exactly the runs ``exec-watchdog advise`` judges, old history
never counts, and no rule reads seven days of samples (an ``increase()`` or ``offset`` would, and
would count the whole history while Prometheus holds less than the window). The exporter's
``--advice-window`` must equal the profile's ``advice_window``
(``exec_watchdog_exporter_history_window_seconds`` shows it). ``max by`` collapses exporter
replicas, which publish identical counters.

The alerts carry no ``remediation`` label: Alertmanager routes them to people, never to the
remediator (alerts/alertmanager.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exec_watchdog.alerts import advice
from exec_watchdog.alerts.profiles import Profile
from exec_watchdog.common import contract
from exec_watchdog.common.contract import ExporterMetric as exporter

AlertBuilder = Callable[..., dict[str, Any]]


RUNS = "exec_watchdog_schedule:successful_runs:window"
QUANTILE = "exec_watchdog_schedule:successful_run_duration_seconds:quantile"
ENDED = "exec_watchdog_schedule:runs_ended_by_watchdog:window"
ADVISED = "exec_watchdog_schedule:timeout_seconds:advised"
RECORDED = (RUNS, QUANTILE, ENDED, ADVISED)

SCHEDULE = "agent, schedule_id"
ON_SCHEDULE = f"on ({SCHEDULE})"
CONFIGURED = f"max by ({SCHEDULE}) ({exporter.SCHEDULE_TIMEOUT})"


def quantile_label(q: float) -> str:
    return f"{q:g}"


def _window(counter: str, before_window: str, by: str) -> str:
    """Runs in the window: the counter minus its runs completed before the window, per ``by``."""
    return f"(max by ({by}) ({counter}) - max by ({by}) ({before_window}))"


def _lookup(metric: str, selector: str = "") -> str:
    """Template text: this schedule's value of a recorded series, as a whole number."""
    extra = f",{selector}" if selector else ""
    return (f'{{{{ with printf `{metric}{{agent="%s",schedule_id="%s"{extra}}}` $labels.agent $labels.schedule_id '
            f'| query }}}}{{{{ . | first | value | printf "%.0f" }}}}{{{{ end }}}}')


def recording_rules(p: Profile) -> list[dict[str, object]]:
    duration = exporter.SCHEDULE_RUN_DURATION
    before = exporter.SCHEDULE_SUCCESSFUL_RUNS_BEFORE_WINDOW
    buckets = _window(f'{duration}_bucket{{status="success"}}', before, f"{SCHEDULE}, le")
    runs = _window(f'{duration}_count{{status="success"}}', f'{before}{{le="+Inf"}}', SCHEDULE)
    rules: list[dict[str, object]] = [{"record": RUNS, "expr": f"{runs}\n"}]
    for q in advice.QUANTILES:
        rules.append({
            "record": QUANTILE,
            "expr": f"histogram_quantile({q:g}, {buckets})\n",
            "labels": {"quantile": quantile_label(q)},
        })
    ended = _window(exporter.SCHEDULE_RUNS_ENDED_BY_WATCHDOG, exporter.SCHEDULE_RUNS_ENDED_BEFORE_WINDOW,
                    f"{SCHEDULE}, action")
    rules.append({"record": ENDED, "expr": f"{ended}\n"})
    p99 = f'{QUANTILE}{{quantile="{quantile_label(advice.ADVICE_QUANTILE)}"}}'
    rules.append({
        "record": ADVISED,
        "expr": (f"max without (quantile) (clamp(\n"
                 f"  ceil({p99} * {advice.MARGIN:g} / {advice.ROUND_TO_SECONDS}) * {advice.ROUND_TO_SECONDS},\n"
                 f"  {advice.MIN_TIMEOUT_SECONDS}, {advice.MAX_TIMEOUT_SECONDS}\n"
                 f"))\n"
                 f"and {ON_SCHEDULE}\n"
                 f"{RUNS} >= {p.advice_min_runs}\n"),
    })
    return rules


def alert_rules(p: Profile, alert: AlertBuilder) -> list[dict[str, object]]:
    """The two warnings, built by ``alert`` (alerts/rules.py's builder, shared by every group)."""
    p99 = f'{QUANTILE}{{quantile="{quantile_label(advice.ADVICE_QUANTILE)}"}}'
    advised = _lookup(ADVISED)
    p99_value = _lookup(QUANTILE, f'quantile="{quantile_label(advice.ADVICE_QUANTILE)}"')
    how = (f"p99 x {advice.MARGIN:g}, rounded up to {advice.ROUND_TO_SECONDS} s, within "
           f"[{advice.MIN_TIMEOUT_SECONDS} s, {advice.MAX_TIMEOUT_SECONDS} s]")
    return [
        alert(
            p, contract.TIMEOUT_TOO_TIGHT,
            # $value: runs the watchdog auto-terminated in the window.
            f'max by ({SCHEDULE}) ({ENDED}{{action="auto_terminated"}}) > 0\n'
            f"and {ON_SCHEDULE}\n"
            f"  {p99} > {ON_SCHEDULE} {advice.TIGHT_SHARE:g} * {CONFIGURED}\n"
            f"and {ON_SCHEDULE}\n"
            f"  {ADVISED}\n",
            p.timeout_advice_for, "warning",
            "A schedule's timeout is killing runs that would have succeeded.",
            "Schedule {{ $labels.schedule_id }} on agent {{ $labels.agent }}: the watchdog auto-terminated "
            f"{{{{ $value | printf \"%.0f\" }}}} of its runs in the last {p.advice_window}, while its successful "
            f"runs' p99 is {p99_value} s against a timeout of "
            f"{_lookup(exporter.SCHEDULE_TIMEOUT)} s. Advised timeout: {advised} s ({how}).",
        ),
        alert(
            p, contract.TIMEOUT_TOO_LOOSE,
            # $value: the configured timeout.
            f"{CONFIGURED}\n"
            f">= {ON_SCHEDULE}\n"
            f"  {advice.LOOSE_FACTOR:g} * {ADVISED}\n",
            p.timeout_advice_for, "warning",
            "A schedule's timeout is far above its longest successful runs.",
            "Schedule {{ $labels.schedule_id }} on agent {{ $labels.agent }} has a timeout of "
            "{{ $value | printf \"%.0f\" }} s, while its successful runs' p99 over the last "
            f"{p.advice_window} is {p99_value} s: a hung run holds its slot "
            f"that long before the watchdog ends it. Advised timeout: {advised} s ({how}).",
        ),
    ]


def timeout_group(p: Profile, alert: AlertBuilder) -> dict[str, object]:
    return {"name": "exec-watchdog.timeouts", "interval": p.evaluation_interval,
            "rules": [*recording_rules(p), *alert_rules(p, alert)]}
