"""What one scrape found: plain, frozen data that exposition.py renders and tests assert on.

Keeping the gathered facts apart from their exposition lets a test check "the agent was
unreachable, so this execution has no presence value" on data, and separately check the samples
written from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# The reasons a poll can fail, as published in the `reason` label (docs/contracts.md).
POLL_ERROR_REASONS = ("unreachable", "timeout", "unauthorized", "bad_response")


@dataclass(frozen=True, slots=True)
class ExecutionFacts:
    """One running execution (status running, no lease) as seen in this scrape."""

    agent: str
    execution_id: str
    schedule_id: str
    runtime_seconds: float
    timeout_seconds: int
    # True: the agent's registry has it (running, pending or recently completed); False: the agent
    # answered and does not have it; None: the agent could not be asked, so nobody knows.
    agent_known: bool | None
    # True: the agent lists it as recently completed (its result is claimed, it is never terminated);
    # None when the agent could not be asked.
    recently_completed: bool | None = None
    # True: a backend dispatcher may still hold it (in-flight marker alive, or the markers could
    # not be read and the run is younger than the in-flight bound): never an orphan. None: not
    # asked (the agent knows the run as running or pending, or could not be asked).
    dispatch_inflight: bool | None = None


@dataclass(frozen=True, slots=True)
class RegistryCounts:
    """How many executions the agent's registry lists in each state."""

    running: int
    pending: int
    recently_completed: int


@dataclass(frozen=True, slots=True)
class AgentFacts:
    """One agent: it has a running execution or an ``agent_ownership`` row."""

    name: str
    up: bool
    registry: RegistryCounts | None  # None unless the agent answered
    slots_used: int | None  # None when the slot store could not be read
    slots_limit: int
    poll_error: str = ""  # the failure kind from the agent client, "" when it answered


@dataclass(frozen=True, slots=True)
class SlotFacts:
    """One capacity slot that can fire (exporter/slot_facts.py): past a share of its TTL, or leaked."""

    agent: str
    execution_id: str
    age_seconds: float  # now - the sorted set's score
    ttl_seconds: float  # Trinity's lifetime: hash timeout + 300, else agent timeout + 300, else 1200
    leaked: bool  # its row is missing or success/failed/cancelled/skipped


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one scrape publishes.

    When the database could not be read, ``database_up`` is False and there are no executions and
    no agents: the exporter does not know them, and publishing the last known ones would be stale.
    """

    database_up: bool
    duration_seconds: float
    version: str
    executions: tuple[ExecutionFacts, ...] = ()
    agents: tuple[AgentFacts, ...] = ()
    # Running rows we cannot publish (unreadable started_at, missing or unsafe agent name);
    # None when the database was not read.
    invalid_rows: int | None = None
    # Cumulative since the exporter started: (agent, reason) -> count. Every polled agent has all
    # reasons (zeros included) so that the first error shows up in rate() and increase().
    poll_errors: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # Slots that can fire, and whether Trinity's governor pauses the slot phase; None (and no
    # slots) when the slot store was not read.
    slots: tuple[SlotFacts, ...] = ()
    slots_paused: bool | None = None
