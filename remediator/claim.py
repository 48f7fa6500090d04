"""Claiming a run's retained result (Trinity #2944): every rule in one place.

Before the watchdog fails a run the agent no longer knows, and for every run the agent lists as
recently completed, it asks the agent for the run's retained result (``GET
/api/executions/{id}/result``) and acts on the answer:

- a result retained at least ``CLAIM_DEFER_SECONDS`` ago: claim it (status mapping, columns and
  notice below); a younger one is left alone for now, the run may still be reporting itself;
- the coded 404 (``no_retained_result``): an orphan is failed, its text ending
  ", no retained result"; a recently-completed run waits (its record may be a moment away,
  or it never comes and the run leaves the window and takes the orphan path);
- a bare 404 (an agent image without the route): an orphan is failed as before; a
  recently-completed run waits;
- anything else (unreachable, 5xx, bad JSON, a body over 20 MB, a response over 4 M characters):
  retry later, never fail.

A retained result is the agent's claim, not a fact, and is checked before it is claimed:

- an envelope naming an execution id other than the one asked for (Trinity's names none) is
  refused: retry later, the row is left as it is;
- a status other than ``success``, ``failed`` or ``cancelled`` (``running``, ``pending``, …) is not a
  terminal result: retry later, never claimed as a failure;
- a cost that is negative, NaN or infinite is not written (``cost`` stays NULL; the evidence keeps
  what the agent sent).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from exec_watchdog.platform_access.agent_client import AgentResult
from exec_watchdog.platform_access.claim_columns import claim_of as claim_of
from exec_watchdog.platform_access.database import Claim
from exec_watchdog.platform_access.retained import RetainedResult
from exec_watchdog.platform_access.run_history import FINAL_STATUSES

CLAIM_DEFER_SECONDS = 180.0

Step = Literal["claim", "fail", "fail_no_record", "wait", "retry"]


@dataclass(frozen=True, slots=True)
class ClaimDecision:
    step: Step
    reason: str = ""
    result: RetainedResult | None = None


def decide(answer: AgentResult[object], *, execution_id: str, recently_completed: bool, now: datetime,
           defer_seconds: float = CLAIM_DEFER_SECONDS) -> ClaimDecision:
    """What to do with run ``execution_id``, given the agent's answer to its ``/result``."""
    if answer.kind == "answered" and isinstance(answer.value, RetainedResult):
        named = answer.value.execution_id
        if named is not None and named != execution_id:
            return ClaimDecision("retry", f"retained result names execution {named!r}, not the one asked for: "
                                          "refused, asked again later")
        if answer.value.status not in FINAL_STATUSES:
            return ClaimDecision("retry", f"retained result says status={answer.value.status!r}: not a terminal "
                                          "result, asked again later")
        age = (now - answer.value.retained_at).total_seconds()
        if age < defer_seconds:
            return ClaimDecision("retry", f"retained result is {max(age, 0):.0f} s old: claimed once it is "
                                          f"{defer_seconds:g} s old (the run may still report itself)")
        return ClaimDecision("claim", result=answer.value)
    missing = (answer.kind == "answered") or answer.kind == "not_found"  # coded or bare 404
    if not missing:
        return ClaimDecision("retry", f"retained result not asked ({answer.kind}): {answer.detail}; "
                                      "a run is never failed on that")
    if recently_completed:
        return ClaimDecision("wait", "recently completed on the agent and no retained result yet: waits for "
                                     "one, or for the run to leave the recently-completed window")
    return ClaimDecision("fail_no_record" if answer.kind == "answered" else "fail")


def announcement_reason(claim: Claim) -> str:
    return f"terminal claimed from the agent's retained result: status={claim.status}"
