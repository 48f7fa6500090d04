"""Shadow mode's comparison rules: what the platform's cleanup did, and one verdict per subject.

Pure functions, no I/O (``remediator/shadow_compare.py`` gathers the facts, ``shadow_store.py``
keeps them). Every rule in one place:

**Subjects.** A verdict is about one subject, named by a kind and an id:

- ``execution``: a ``schedule_executions`` row (every path that writes a row: orphan, overdue,
  claim, stale, no session, the slot reclaims that fail the run, skipped rows, backlog);
- ``activity``: an ``agent_activities`` row (the 120-minute backstop, ``fail_stale_activity``);
- ``slot``: a capacity slot released without a row write (a leaked slot, or an expired slot whose
  row stays as it is), named ``{agent}/{execution_id}``.

**Their side.** In shadow mode we write nothing, so a cleanup text in a row is the platform's. Its
texts (DESIGN.md, ``remediator/texts.py``) map onto the action vocabulary (:func:`their_row_action`,
:func:`their_activity_action`). A claimed success is recognised by the notice its response starts
with; a claim of a failed or cancelled envelope carries no mark of its own and is not recognised.
A slot has no text: the slot gone from Redis is their release, seen when first observed (a run's
own end also releases its slot; for a leaked slot nobody else does).

**Their write time** is the row's ``completed_at``, except for a skipped row (Trinity writes
``completed_at = started_at`` there) and a slot: then the time we first saw the write.

**Verdicts**, once both sides had their time:

- ``agree``: both acted, the same action; the lead time is their write minus our first decision
  (negative when they were first);
- ``different``: both acted, differently (we would claim the retained success, they failed it);
- ``ours_only``: we decided; they had not acted by the end of their window (their cycle plus their
  thresholds for that path, :func:`their_window`) — either they are slow or we are wrong;
- ``theirs_only``: they acted and we had not decided by the end of our grace after their write.
  Trinity lets a late success overwrite a failure: their write is remembered when first seen, and a
  later success is added to the verdict's evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from exec_watchdog.common.contract import (
    CLAIM_RESULT,
    EXPIRE_BACKLOG,
    FAIL_NO_SESSION,
    FAIL_ORPHAN,
    FAIL_STALE,
    FAIL_STALE_ACTIVITY,
    FINALIZE_SKIPPED,
    RECLAIM_EXPIRED_SLOT,
    RECLAIM_SLOT_UNREACHABLE,
    RELEASE_LEAKED_SLOT,
    SHADOW_VERDICTS,
    TERMINATE_OVERDUE,
)
from exec_watchdog.remediator import texts

Kind = Literal["execution", "activity", "slot"]
Verdict = Literal["agree", "ours_only", "theirs_only", "different"]
assert set(SHADOW_VERDICTS) == set(Verdict.__args__)  # type: ignore[attr-defined]

THEIR_CYCLE_SECONDS = 300.0  # Trinity's cleanup cycle
BACKLOG_CYCLE_SECONDS = 60.0  # Trinity's capacity maintenance, which expires the backlog
THEIR_MARGIN_SECONDS = 60.0  # their cycle's own run time, and clocks apart
OUR_GRACE_SECONDS = 300.0  # after their write: how long our alert may still take to reach a decision

SLOT_ACTIONS_WITHOUT_ROW = (RELEASE_LEAKED_SLOT, RECLAIM_EXPIRED_SLOT, RECLAIM_SLOT_UNREACHABLE)

# Their failure texts, recognised in `error`; the /last-error prefix ("[type] message. Cleanup: ")
# may stand in front of the Phase 0 texts, so those are matched inside the text.
_ORPHAN_MARK = "— recovered by watchdog"
_OVERDUE_MARK = "by watchdog (exceeded timeout of "
_STALE_PREFIX, _STALE_SUFFIX = texts.stale_text(0).split("0s")  # "…exceeded ", " stale timeout"
_NO_SESSION_PREFIX = texts.no_session_text(0).removesuffix("0 seconds")
_SLOT_EXPIRED_PREFIX, _SLOT_EXPIRED_SUFFIX = texts.slot_expired_text("\0").split("\0")
_SLOT_UNREACHABLE_PREFIX, _SLOT_UNREACHABLE_SUFFIX = texts.slot_unreachable_text("\0").split("\0")
_ACTIVITY_PREFIX, _ACTIVITY_SUFFIX = texts.stale_activity_text(60).split("1")


@dataclass(frozen=True, slots=True)
class Settings:
    """Their window and our grace; ``interval_seconds`` is how often the comparison runs."""

    interval_seconds: float = 30.0
    their_cycle_seconds: float = THEIR_CYCLE_SECONDS
    their_margin_seconds: float = THEIR_MARGIN_SECONDS
    our_grace_seconds: float = OUR_GRACE_SECONDS
    follow_seconds: float = 6 * 3600.0  # how long a judged failure is watched for a later success

    def __post_init__(self) -> None:
        if self.interval_seconds <= 0:
            raise ValueError("the shadow comparison's interval must be positive")
        if min(self.their_cycle_seconds, self.their_margin_seconds, self.our_grace_seconds,
               self.follow_seconds) < 0:
            raise ValueError("the shadow comparison's windows cannot be negative")


def their_row_action(status: str, error: str | None, claimed: bool) -> str | None:
    """The action a platform cleanup write in a ``schedule_executions`` row stands for, or None.

    ``claimed`` says the response starts with the claim notice (a claimed success).
    """
    if claimed and status in ("success", "failed", "cancelled"):
        return CLAIM_RESULT
    if status != "failed" or not error:
        return None
    if error == texts.SKIPPED_FINALIZED_TEXT:
        return FINALIZE_SKIPPED
    if error == texts.BACKLOG_EXPIRED_TEXT:
        return EXPIRE_BACKLOG
    if error.startswith(_NO_SESSION_PREFIX):
        return FAIL_NO_SESSION
    if error.startswith(_STALE_PREFIX) and error.endswith(_STALE_SUFFIX):
        return FAIL_STALE
    if error.startswith(_SLOT_UNREACHABLE_PREFIX) and error.endswith(_SLOT_UNREACHABLE_SUFFIX):
        return RECLAIM_SLOT_UNREACHABLE
    if error.startswith(_SLOT_EXPIRED_PREFIX) and error.endswith(_SLOT_EXPIRED_SUFFIX):
        return RECLAIM_EXPIRED_SLOT
    if _OVERDUE_MARK in error and "auto-terminated after" in error:
        return TERMINATE_OVERDUE
    if _ORPHAN_MARK in error and "not tracked by agent" in error:
        return FAIL_ORPHAN
    return None


def their_activity_action(state: str, error: str | None) -> str | None:
    """The 120-minute backstop's write in ``agent_activities`` (any bound in minutes), or None."""
    if state == "failed" and error and error.startswith(_ACTIVITY_PREFIX) and error.endswith(_ACTIVITY_SUFFIX):
        return FAIL_STALE_ACTIVITY
    return None


def their_window(action: str, settings: Settings, slot_wait_seconds: float = 0.0) -> float:
    """Seconds after our decision by which the platform's cleanup would have acted, had it agreed.

    Their thresholds equal ours on every path (we took them from Trinity), so the window starts at
    our decision: their cycle (the backlog's is 60 s) plus the margin. A leaked slot is the
    exception: Trinity drops it only once the slot's TTL has passed (``slot_wait_seconds``: the TTL
    left when we decided), while we release it 15 s after it leaked.
    """
    cycle = BACKLOG_CYCLE_SECONDS if action == EXPIRE_BACKLOG else settings.their_cycle_seconds
    return cycle + settings.their_margin_seconds + max(0.0, slot_wait_seconds)


@dataclass(frozen=True, slots=True)
class Ours:
    action: str
    decided_at: datetime
    due_at: datetime  # the end of their window: our decision + their_window(...)
    late: bool = False  # an alert of ours reached us after their write (not re-verified: they had ended it)


@dataclass(frozen=True, slots=True)
class Theirs:
    action: str
    written_at: datetime
    observed_at: datetime  # when the comparison first saw the write


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    action: str  # the metric's label: our action when we acted, else theirs
    lead_seconds: float | None  # their write - our decision; None unless both acted
    why: str


def judge(ours: Ours | None, theirs: Theirs | None, now: datetime, settings: Settings) -> Judgement | None:
    """The subject's verdict, or None while a side may still act."""
    if ours is not None and theirs is not None:
        lead = (theirs.written_at - ours.decided_at).total_seconds()
        who = f"they wrote {abs(lead):.1f} s {'after' if lead >= 0 else 'before'} our decision"
        if ours.action == theirs.action:
            return Judgement("agree", ours.action, lead, f"both {ours.action}; {who}")
        return Judgement("different", ours.action, lead,
                         f"we would {ours.action}, they did {theirs.action}; {who}")
    if ours is not None:
        if now < ours.due_at:
            return None
        window = (ours.due_at - ours.decided_at).total_seconds()
        return Judgement("ours_only", ours.action, None,
                         f"we would {ours.action}; no cleanup write of theirs within their {window:g} s window")
    if theirs is not None:
        if (now - theirs.observed_at).total_seconds() < settings.our_grace_seconds:
            return None
        return Judgement("theirs_only", theirs.action, None,
                         f"they did {theirs.action}; no decision of ours within {settings.our_grace_seconds:g} s "
                         "of seeing it")
    return None
