"""How fast a profile can possibly recover an execution: the pipeline's floor.

Detection to webhook is bounded by one scrape interval (the exporter must see the change), one
evaluation interval (the rule must run on that sample), the rule's ``for`` and Alertmanager's
``group_wait``. An orphan also cannot be flagged before it is ``orphan_min_age_seconds`` old, and
an execution whose report was lost stays "recently completed" on its agent for a while (Trinity:
300 s) before anyone may call it unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

from exec_watchdog.alerts.render import duration_seconds, profile_settings
from exec_watchdog.common.contract import FAIL_ORPHAN, TERMINATE_OVERDUE

TRINITY_POLL_SECONDS = 300.0  # Trinity's in-backend watchdog cycle
TRINITY_MIN_AGE_SECONDS = 60.0
TRINITY_RECENTLY_COMPLETED_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Timing:
    profile: str
    scrape_interval: float
    evaluation_interval: float
    orphan_for: float
    overdue_for: float
    group_wait: float
    repeat_interval: float
    orphan_min_age: float

    @classmethod
    def of(cls, profile: str) -> Timing:
        s = profile_settings(profile)

        def seconds(name: str) -> float:
            return duration_seconds(str(s[name]))

        return cls(profile=profile, scrape_interval=seconds("scrape_interval"),
                   evaluation_interval=seconds("evaluation_interval"), orphan_for=seconds("orphan_for"),
                   overdue_for=seconds("overdue_for"), group_wait=seconds("group_wait"),
                   repeat_interval=seconds("repeat_interval"), orphan_min_age=float(s["orphan_min_age_seconds"]))

    def detection(self, action: str) -> float:
        """scrape + evaluation + for + group_wait, for ``fail_orphan`` or ``terminate_overdue``."""
        rule_for = {FAIL_ORPHAN: self.orphan_for, TERMINATE_OVERDUE: self.overdue_for}[action]
        return self.scrape_interval + self.evaluation_interval + rule_for + self.group_wait

    def orphan_floor(self, run_seconds: float, completed_window: float) -> float:
        """Seconds from a lost report (process end) to the earliest possible webhook.

        The agent lists the run as recently completed for ``completed_window`` seconds; the rule
        also waits until the execution is ``orphan_min_age`` old (it ran ``run_seconds``).
        """
        unknown_after = max(completed_window, self.orphan_min_age - run_seconds)
        return unknown_after + self.detection(FAIL_ORPHAN)

    def overdue_floor(self) -> float:
        """Seconds from crossing the timeout to the earliest possible webhook."""
        return self.detection(TERMINATE_OVERDUE)

    def describe(self) -> str:
        return (f"scrape {self.scrape_interval:g} s + evaluation {self.evaluation_interval:g} s + for "
                f"{self.orphan_for:g} s (orphan) / {self.overdue_for:g} s (overdue) + group_wait "
                f"{self.group_wait:g} s; orphans at least {self.orphan_min_age:g} s old")


def trinity_worst_seconds() -> float:
    """Trinity's own watchdog, worst case after an execution becomes unknown: a full poll cycle
    plus its minimum age (a young run waits for the next cycle after it turns 60 s)."""
    return TRINITY_POLL_SECONDS + TRINITY_MIN_AGE_SECONDS
