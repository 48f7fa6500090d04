"""The advised timeout: one definition, used by the recording rules and by ``exec-watchdog advise``.

From a schedule's successful runs over a window (``advice_window`` in the rule profiles, 7 days in
production), with at least ``advice_min_runs`` of them::

    advised = clamp(ceil(p99 * MARGIN / ROUND_TO) * ROUND_TO, MIN_TIMEOUT, MAX_TIMEOUT)

where p99 is estimated from the exporter's duration histogram exactly as Prometheus'
``histogram_quantile`` does (linear within a bucket), so the command and the rules give the same
number from the same runs. The alert thresholds live here too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

QUANTILES = (0.5, 0.95, 0.99)  # published per schedule (dashboards, the advise table)
ADVICE_QUANTILE = 0.99  # the runtime the timeout must clear: 1 good run in 100 may come close
MARGIN = 1.5  # headroom above that runtime for a slow day
ROUND_TO_SECONDS = 60  # advise whole minutes (operators set minutes; stable under noise)
MIN_TIMEOUT_SECONDS = 60  # never advise less: Trinity's own orphan check waits 60 s
MAX_TIMEOUT_SECONDS = 86_400  # never advise more than a day: a longer run wants a different design
# TooTight: runs were auto-terminated and good runs' p99 is within this share of the timeout.
TIGHT_SHARE = 0.8
# TooLoose: the timeout is this many times the advised one or more (a hung run holds its slot that long).
LOOSE_FACTOR = 4


def advised_timeout(p99_seconds: float) -> int:
    """The advised timeout for a schedule whose successful runs' p99 is ``p99_seconds``."""
    if not math.isfinite(p99_seconds) or p99_seconds < 0:
        raise ValueError(f"p99 must be a finite, non-negative number of seconds, got {p99_seconds!r}")
    rounded = math.ceil(p99_seconds * MARGIN / ROUND_TO_SECONDS) * ROUND_TO_SECONDS
    return int(min(max(rounded, MIN_TIMEOUT_SECONDS), MAX_TIMEOUT_SECONDS))


def histogram_quantile(q: float, upper_bounds: Sequence[float], cumulative: Sequence[float]) -> float:
    """Prometheus' ``histogram_quantile`` for one histogram (cumulative counts per upper bound, +Inf last).

    NaN without observations. As in Prometheus: linear interpolation inside the bucket holding the
    rank, the first bucket's lower bound is 0 (for a positive upper bound), and a rank in the +Inf
    bucket answers the highest finite bound.
    """
    if len(upper_bounds) != len(cumulative) or len(upper_bounds) < 2 or not math.isinf(upper_bounds[-1]):
        raise ValueError("need at least two buckets, the last one +Inf, and a count per bucket")
    total = cumulative[-1]
    if total <= 0:
        return math.nan
    rank = q * total
    index = next(i for i, c in enumerate(cumulative) if c >= rank)
    if index == len(upper_bounds) - 1:
        return float(upper_bounds[-2])
    if index == 0 and upper_bounds[0] <= 0:
        return float(upper_bounds[0])
    start = 0.0 if index == 0 else float(upper_bounds[index - 1])
    below = 0.0 if index == 0 else float(cumulative[index - 1])
    in_bucket = cumulative[index] - below
    return start + (float(upper_bounds[index]) - start) * ((rank - below) / in_bucket)


@dataclass(frozen=True, slots=True)
class Advice:
    """One schedule's advice, with the reason in words."""

    agent: str
    schedule_id: str
    runs: int
    quantiles: dict[float, float]  # empty without successful runs
    current_timeout: int | None
    advised: int | None
    why: str


def advise(agent: str, schedule_id: str, upper_bounds: Sequence[float], cumulative: Sequence[float],
           current_timeout: int | None, min_runs: int) -> Advice:
    """The advice for one schedule from its successful runs' histogram over the window."""
    runs = int(cumulative[-1]) if cumulative else 0
    quantiles = {} if runs == 0 else {q: histogram_quantile(q, upper_bounds, cumulative) for q in QUANTILES}
    if runs < min_runs:
        return Advice(agent, schedule_id, runs, quantiles, current_timeout, None,
                      f"only {runs} successful runs in the window; advice needs {min_runs}")
    p99 = quantiles[ADVICE_QUANTILE]
    advised = advised_timeout(p99)
    basis = f"p99 {p99:.0f}s x {MARGIN:g}, rounded up to {ROUND_TO_SECONDS}s"
    if not MIN_TIMEOUT_SECONDS < advised < MAX_TIMEOUT_SECONDS:
        basis += f", within [{MIN_TIMEOUT_SECONDS}s, {MAX_TIMEOUT_SECONDS}s]"
    if current_timeout is None:
        verdict = "no timeout configured"
    elif p99 > TIGHT_SHARE * current_timeout:
        verdict = f"too tight: p99 is {p99 / current_timeout:.0%} of the current timeout"
    elif current_timeout >= LOOSE_FACTOR * advised:
        verdict = f"too loose: the current timeout is {current_timeout / advised:.1f}x the advised one"
    elif advised == current_timeout:
        verdict = "keep"
    else:
        verdict = "fits"
    return Advice(agent, schedule_id, runs, quantiles, current_timeout, advised, f"{verdict} ({basis})")
