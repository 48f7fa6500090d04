"""What every won transition also writes, in the same transaction: the run's activity close and,
when someone subscribed, its ``agent_events`` row. One rule per remediation value.

Trinity's rules (cleanup_service, db/activities, event_dispatch_service):

- the Phase 0 watchdog (orphan, overdue, claimed result) closes the run's one dispatch activity
  in the row's own terms: ``success`` → ``completed``, ``cancelled`` → ``cancelled``, anything else
  → ``failed`` with the row's error; ``duration_ms`` measured from the activity's start;
- a stale or no-session sweep closes every open dispatch activity of the run ``failed`` with
  ``Marked as failed by cleanup: execution swept as stale``, ``duration_ms`` NULL;
- a slot reclaim closes the one activity ``failed`` with
  ``lease_expired: slot lease expired (no result callback)``;
- a skipped row finalized, or a backlog row expired: no activity close, no event;
- the event: ``agent.task.completed`` / ``agent.task.failed`` for the status written, unless the
  run was started by an event, and only when an enabled subscription matches
  (``platform_access/agent_events.py``).

A path registers its rule under its remediation value in :data:`RULES`; a value without an entry
gets :data:`DEFAULT` (Phase 0's). The row is read back after the guarded update, so the rule needs
no knowledge of how the path wrote it.

:func:`after_won_many` does it for a whole transaction's wins with one read of each kind (the
rows, their activities, the subscriptions), then the writes row by row, each still guarded.

The writes share the transition's transaction: a won transition has its close and its event, a
lost or rolled-back one has neither, and a repeat delivery (which cannot win again) writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import sqlalchemy as sa

from exec_watchdog.common.contract import (
    EXPIRE_BACKLOG,
    FAIL_NO_SESSION,
    FAIL_STALE,
    FAIL_STALE_ACTIVITY,
    FINALIZE_SKIPPED,
    RECLAIM_EXPIRED_SLOT,
    RECLAIM_SLOT_UNREACHABLE,
    RELEASE_LEAKED_SLOT,
)
from exec_watchdog.platform_access import activities, agent_events
from exec_watchdog.remediator import texts

CloseMode = Literal["one", "all_open", "none"]


@dataclass(frozen=True, slots=True)
class CloseRule:
    mode: CloseMode = "one"
    text: str | None = None  # None: the row's own error
    event: bool = True


DEFAULT = CloseRule()
STALE_SWEEP = CloseRule("all_open", texts.STALE_SWEEP_ACTIVITY_TEXT)
SLOT_RECLAIM = CloseRule("one", texts.SLOT_RECLAIM_ACTIVITY_TEXT)
NOTHING = CloseRule("none", event=False)

RULES: dict[str, CloseRule] = {
    FINALIZE_SKIPPED: NOTHING,
    EXPIRE_BACKLOG: NOTHING,
    FAIL_STALE_ACTIVITY: NOTHING,  # the subject is an activity: there is no run to close
    RECLAIM_EXPIRED_SLOT: SLOT_RECLAIM,
    RECLAIM_SLOT_UNREACHABLE: SLOT_RECLAIM,
    RELEASE_LEAKED_SLOT: NOTHING,  # a leaked slot's row is already finished (or missing): nothing to close
    FAIL_STALE: STALE_SWEEP,
    FAIL_NO_SESSION: STALE_SWEEP,
}


CLOSE_TABLES = ("agent_activities", "agent_event_subscriptions", "agent_events")


def tables_present(conn: sa.Connection) -> bool:
    """Whether the database has every table a close writes (Trinity's always does)."""
    return set(CLOSE_TABLES) <= set(sa.inspect(conn).get_table_names())


def rule_for(remediation: str) -> CloseRule:
    return RULES.get(remediation, DEFAULT)


@dataclass(slots=True)
class Closed:
    """What the close wrote, for the evidence."""

    activities: list[str] = field(default_factory=list)
    event_id: str | None = None


def after_won(conn: sa.Connection, remediation: str, execution_id: str, now: datetime) -> Closed:
    """Close the run's activity and emit its event, as ``remediation``'s rule says."""
    return after_won_many(conn, [(remediation, execution_id)], now)[execution_id]


def after_won_many(conn: sa.Connection, won: Sequence[tuple[str, str]], now: datetime) -> dict[str, Closed]:
    """:func:`after_won` for every (remediation, execution id) a transaction won, with one read of
    the rows, one of their activities and one of the subscriptions for them all."""
    closed = {execution_id: Closed() for _, execution_id in won}
    acting = [(rule, execution_id) for rule, execution_id in ((rule_for(r), e) for r, e in won)
              if rule.mode != "none" or rule.event]
    if not acting:
        return closed
    terminals = agent_events.read_terminals(conn, [execution_id for _, execution_id in acting])
    present = [(rule, terminals[execution_id]) for rule, execution_id in acting if execution_id in terminals]
    picked = activities.closable_of(conn, {t.execution_id: t.status for rule, t in present if rule.mode == "one"})
    for rule, terminal in present:
        if rule.mode == "one":
            own_error = None if terminal.status == "success" else terminal.error
            error = rule.text if rule.text is not None else own_error
            activity = activities.close_picked(conn, picked.get(terminal.execution_id), terminal.status, error, now)
            closed[terminal.execution_id].activities = [activity] if activity else []
        elif rule.mode == "all_open":
            closed[terminal.execution_id].activities = activities.close_all_open(
                conn, terminal.execution_id, rule.text or terminal.error or "", now)
    emitting = [terminal for rule, terminal in present if rule.event]
    if emitting:
        subscriptions = agent_events.subscriptions_matching(conn, (t.agent_name for t in emitting))
        for terminal in emitting:
            closed[terminal.execution_id].event_id = agent_events.emit_terminal_event(conn, terminal, now,
                                                                                    subscriptions)
    return closed
