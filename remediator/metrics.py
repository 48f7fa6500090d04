"""The remediator's /metrics, in a registry of its own (tests build a fresh one per app)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exec_watchdog.common.contract import RemediatorMetric as names
from exec_watchdog.common.contract import ShadowMetric
from exec_watchdog.remediator.announce import story_url
from exec_watchdog.remediator.audit import Recovery

SHADOW_LEAD_BUCKETS = (-600, -300, -120, -60, -30, -10, -1, 0, 1, 10, 30, 60, 120, 300, 600, 900)


class RecentRecoveries(Collector):
    """Each recovery this replica made, for a while, with a link to its story: one Grafana annotation
    per recovery. Execution ids as labels are deliberate (the annotation must name and link the
    execution) and bounded: at most ``capacity`` recoveries, none older than ``keep_seconds``.

        exec_watchdog_remediator_recovery_timestamp_seconds{action="fail_orphan",agent="a1",
            execution_id="e1",story_url="http://remediator:9464/#execution=e1"} 1.7645e+09
    """

    def __init__(self, external_url: str = "", capacity: int = 1000, keep_seconds: float = 900.0) -> None:
        self.external_url = external_url
        self.keep_seconds = keep_seconds
        self._recent: deque[tuple[float, Recovery]] = deque(maxlen=capacity)

    def add(self, recovery: Recovery) -> None:
        self._recent.append((time.monotonic(), recovery))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        cutoff = time.monotonic() - self.keep_seconds
        while self._recent and self._recent[0][0] < cutoff:
            self._recent.popleft()
        family = GaugeMetricFamily(names.RECOVERY_TIMESTAMP, "Unix time of each recent recovery by this replica "
                                   "(the last 15 minutes, at most 1,000), for annotations linking to its story.",
                                   labels=["agent", "execution_id", "action", "story_url"])
        for _, r in self._recent:
            family.add_metric([r.agent_name, r.execution_id, r.action, story_url(self.external_url, r.execution_id)],
                              r.recovered_at.timestamp())
        yield family


class RemediatorMetrics:
    def __init__(self, registry: CollectorRegistry, external_url: str = "") -> None:
        self.registry = registry
        self.requests = Counter(names.REQUESTS.removesuffix("_total"), "Webhook requests by status code.",
                                ["code"], registry=registry)
        self.alerts = Counter(names.ALERTS.removesuffix("_total"), "Alerts received, by status and remediation.",
                              ["status", "remediation"], registry=registry)
        self.remediations = Counter(names.REMEDIATIONS.removesuffix("_total"),
                                    "Remediation decisions by action and outcome.", ["action", "outcome"],
                                    registry=registry)
        self.duration = Histogram(names.REMEDIATION_DURATION, "Time spent deciding and acting on one notification.",
                                  ["action"], registry=registry,
                                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.time_to_recovery = Histogram(
            names.TIME_TO_RECOVERY, "From the alert's startsAt to the execution marked failed.", ["action"],
            registry=registry, buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600))
        self.detected_after = Histogram(
            names.DETECTED_AFTER, "From the moment the run was lost (overdue: start + timeout; orphan: first scrape "
            "unknown to its agent; claimed: retained_at) to the execution's recovered row.", ["action"],
            registry=registry, buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600))
        self.breaker_open = Gauge(names.BREAKER_OPEN, "1 while the breaker stops remediation.", registry=registry)
        self.pending_finishes = Gauge(names.PENDING_FINISHES,
                                      "Recoveries whose slot release or announcement is not done yet.",
                                      registry=registry)
        # Shadow mode (remediator/shadow_compare.py): one verdict per subject either side acted on.
        self.shadow_verdicts = Counter(ShadowMetric.VERDICTS.removesuffix("_total"),
                                       "Shadow verdicts beside the platform's own cleanup, by verdict and action.",
                                       ["verdict", "action"], registry=registry)
        self.shadow_lead = Histogram(ShadowMetric.LEAD, "The platform's cleanup write minus our first decision, when "
                                     "both acted (negative: they were first).", ["action"], registry=registry,
                                     buckets=SHADOW_LEAD_BUCKETS)
        self.recent_recoveries = RecentRecoveries(external_url)
        registry.register(self.recent_recoveries)
