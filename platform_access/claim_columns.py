"""The columns a claimed retained result writes (Trinity #2944), shared by the remediator's claim
and the simulated platform's model of Trinity's watchdog: ``success`` keeps the response behind a
one-line notice, ``failed``/``cancelled`` carry the envelope's error (or what it says instead),
capped at 2,000 characters; cost, session id and log as the agent kept them.
"""

from __future__ import annotations

from exec_watchdog.platform_access.database import Claim
from exec_watchdog.platform_access.retained import RetainedResult
from exec_watchdog.platform_access.run_history import FINAL_STATUSES, RECOVERED_NOTICE
from exec_watchdog.platform_access.texts import MAX_ERROR_CHARS


def claim_of(result: RetainedResult) -> Claim:
    """The columns a claimed result writes: Trinity's status mapping, the notice on a success."""
    if result.status not in FINAL_STATUSES:
        raise ValueError(f"not a terminal result: status={result.status!r}")  # never claimed
    status = result.status
    response = result.response
    if status == "success":
        response = f"{RECOVERED_NOTICE}\n{response or ''}"
    error = None
    if status != "success":
        error = (result.error or f"{status} on the agent ({result.terminal_reason or 'no detail'})")[:MAX_ERROR_CHARS]
    return Claim(status=status, response=response, error=error, cost=result.cost_usd,
                 session_id=result.session_id, execution_log=result.execution_log)
