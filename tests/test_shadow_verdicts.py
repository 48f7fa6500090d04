"""Shadow mode's pure rules: their texts mapped onto our actions, and one verdict per subject."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from exec_watchdog.remediator import texts
from exec_watchdog.remediator.shadow_decisions import slot_ttl_left
from exec_watchdog.remediator.shadow_verdicts import (
    Ours,
    Settings,
    Theirs,
    judge,
    their_activity_action,
    their_row_action,
    their_window,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SETTINGS = Settings(their_cycle_seconds=300, their_margin_seconds=60, our_grace_seconds=120)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(("status", "error", "action"), [
    ("failed", texts.orphan_text("a1", reports_pending=True, no_retained_result=True), "fail_orphan"),
    ("failed", "[TimeoutError] it hung. Cleanup: " + texts.orphan_text("a1", reports_pending=False,
                                                                       no_retained_result=False), "fail_orphan"),
    ("failed", texts.overdue_text(3725, 3600), "terminate_overdue"),
    ("failed", "[Killed] sigint. Cleanup: " + texts.overdue_text(125, 60), "terminate_overdue"),
    ("failed", texts.stale_text(3900), "fail_stale"),
    ("failed", texts.no_session_text(60), "fail_no_session"),
    ("failed", texts.slot_expired_text("a.b-c"), "reclaim_expired_slot"),
    ("failed", texts.slot_unreachable_text("a1"), "reclaim_slot_unreachable"),
    ("failed", texts.SKIPPED_FINALIZED_TEXT, "finalize_skipped"),
    ("failed", texts.BACKLOG_EXPIRED_TEXT, "expire_backlog"),
    ("failed", "exit code 1", None),  # the run's own failure
    ("success", None, None),
    ("success", texts.stale_text(3900), None),  # a late success over their failure: nothing of theirs now
    ("cancelled", None, None),
])
def test_each_cleanup_text_of_the_platform_maps_to_its_action(status: str, error: str | None,
                                                               action: str | None) -> None:
    assert their_row_action(status, error, claimed=False) == action


def test_a_claimed_result_is_recognised_by_its_notice_whatever_status_it_wrote() -> None:
    assert their_row_action("success", None, claimed=True) == "claim_result"
    assert their_row_action("running", None, claimed=True) is None


def test_the_activity_backstop_text_maps_for_any_bound_in_minutes() -> None:
    assert their_activity_action("failed", texts.STALE_ACTIVITY_TEXT) == "fail_stale_activity"
    assert their_activity_action("failed", texts.stale_activity_text(90 * 60)) == "fail_stale_activity"
    assert their_activity_action("failed", texts.STALE_SWEEP_ACTIVITY_TEXT) is None  # a sweep's close, not the backstop
    assert their_activity_action("completed", texts.STALE_ACTIVITY_TEXT) is None


def test_their_window_is_their_cycle_plus_margin_and_a_leaked_slots_remaining_ttl() -> None:
    assert their_window("fail_orphan", SETTINGS) == 360
    assert their_window("expire_backlog", SETTINGS) == 120  # capacity maintenance runs every 60 s
    assert their_window("release_leaked_slot", SETTINGS, slot_wait_seconds=3000) == 3360
    assert slot_ttl_left('{"slot": {"ttl_seconds": 3900, "age_seconds": 900.5}}') == 2999.5
    assert slot_ttl_left(None) == slot_ttl_left("{not json") == slot_ttl_left('{"slot": {}}') == 0.0


def test_both_acting_the_same_way_agree_with_the_lead_time_their_write_minus_our_decision() -> None:
    ours = Ours("fail_orphan", at(0), at(360))
    j = judge(ours, Theirs("fail_orphan", at(140.5), at(150)), at(150), SETTINGS)
    assert j is not None and (j.verdict, j.action, j.lead_seconds) == ("agree", "fail_orphan", 140.5)
    first = judge(ours, Theirs("fail_orphan", at(-20), at(1)), at(1), SETTINGS)
    assert first is not None and (first.verdict, first.lead_seconds) == ("agree", -20)


def test_our_claim_against_their_failure_is_different() -> None:
    j = judge(Ours("claim_result", at(0), at(360)), Theirs("fail_orphan", at(30), at(31)), at(31), SETTINGS)
    assert j is not None and (j.verdict, j.action, j.lead_seconds) == ("different", "claim_result", 30)
    assert "they did fail_orphan" in j.why


def test_our_lone_decision_is_ours_only_only_once_their_window_has_passed() -> None:
    ours = Ours("fail_stale", at(0), at(360))
    assert judge(ours, None, at(359.9), SETTINGS) is None
    j = judge(ours, None, at(360), SETTINGS)
    assert j is not None and (j.verdict, j.action, j.lead_seconds) == ("ours_only", "fail_stale", None)


def test_their_lone_write_is_theirs_only_only_after_our_grace_from_when_we_saw_it() -> None:
    theirs = Theirs("fail_no_session", at(0), at(25))
    assert judge(None, theirs, at(144.9), SETTINGS) is None
    j = judge(None, theirs, at(145), SETTINGS)
    assert j is not None and (j.verdict, j.action) == ("theirs_only", "fail_no_session")


def test_bad_windows_are_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        Settings(interval_seconds=0)
    with pytest.raises(ValueError, match="negative"):
        Settings(our_grace_seconds=-1)
