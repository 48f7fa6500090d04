"""When a run was lost (remediator/detection.py): one rule per remediation, untrusted annotations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from exec_watchdog.remediator.detection import detected_after, lost_at, unknown_since

STARTED = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
RETAINED = STARTED + timedelta(seconds=42)


def test_overdue_run_was_lost_at_its_start_plus_its_timeout() -> None:
    assert lost_at("terminate_overdue", annotations={}, started_at=STARTED, timeout_seconds=900,
                   retained_at=None) == STARTED + timedelta(seconds=900)


def test_orphan_was_lost_at_the_first_unknown_scrape_and_a_claim_when_the_result_was_kept() -> None:
    annotations = {"unknown_since": f"{STARTED.timestamp() + 7.25:.3f}"}
    assert lost_at("fail_orphan", annotations=annotations, started_at=STARTED, timeout_seconds=60,
                   retained_at=None) == STARTED + timedelta(seconds=7.25)
    # An orphan alert that ends in a claimed result: the agent's own word on when it finished.
    assert lost_at("fail_orphan", annotations=annotations, started_at=STARTED, timeout_seconds=60,
                   retained_at=RETAINED) == RETAINED
    assert lost_at("claim_result", annotations={}, started_at=STARTED, timeout_seconds=60,
                   retained_at=RETAINED) == RETAINED
    assert lost_at("fail_orphan", annotations={}, started_at=STARTED, timeout_seconds=60, retained_at=None) is None
    assert lost_at("other", annotations=annotations, started_at=STARTED, timeout_seconds=60, retained_at=None) is None


@pytest.mark.parametrize("raw", ["unknown", "", "nan", "inf", "-1", "1e30", "12", "1764000000" + "0" * 40,
                                 "1764000000; drop", "0x6900"])
def test_unreadable_or_implausible_unknown_since_counts_as_unknown(raw: str) -> None:
    assert unknown_since({"unknown_since": raw}) is None


def test_detected_after_is_never_negative() -> None:
    assert detected_after(None, STARTED) is None
    assert detected_after(STARTED, STARTED + timedelta(seconds=3.5)) == 3.5
    assert detected_after(STARTED + timedelta(seconds=1), STARTED) == 0.0  # clocks a little apart
