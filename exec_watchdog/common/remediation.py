"""The remediation label and its values: what an alert rule asks the remediator to do.

One definition for the rules that set the label and the remediator that acts on it
(docs/contracts.md).
"""

from __future__ import annotations

from typing import Final, Literal

REMEDIATION_LABEL = "remediation"
FAIL_ORPHAN = "fail_orphan"  # the agent no longer knows the run: mark it failed, release the slot
TERMINATE_OVERDUE = "terminate_overdue"  # past its timeout: terminate on the agent, then mark failed
CLAIM_RESULT = "claim_result"  # recently completed on the agent, still running in the database: claim the result
ACTIONS = (FAIL_ORPHAN, TERMINATE_OVERDUE, CLAIM_RESULT)

# What the remediator decided for one alert: the webhook's answer, the audit row, the metric label.
Outcome = Literal["recovered", "would_recover", "skipped", "silenced", "ignored", "retry", "lost_race",
                  "breaker_open", ""]
UNDECIDED: Final = ""  # no check has decided yet: the alert goes on to the next one
