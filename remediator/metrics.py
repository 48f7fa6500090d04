"""The remediator's /metrics, in a registry of its own (tests build a fresh one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from remediator import metric_names as names


class RemediatorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
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
        self.breaker_open = Gauge(names.BREAKER_OPEN, "1 while the breaker stops remediation.", registry=registry)
        self.pending_finishes = Gauge(names.PENDING_FINISHES,
                                      "Recoveries whose slot release or announcement is not done yet.",
                                      registry=registry)
