"""One simulated agent's retained results: the terminal envelope of each finished synchronous run,
kept where the watchdog can claim it after the connection that waited for it is gone (Trinity #2944).

As Trinity's agent keeps them (``services/retained_results.py``): one record per execution, the
last write for an id standing; kept ``ttl`` seconds (6 h) and at most ``max_records`` (50, one
file each in Trinity), the oldest by write time evicted on every write but never the record just
written; a transcript above ``log_max_bytes`` is dropped (``truncated_log``), never the result.
Ids outside Trinity's safe rule ``[A-Za-z0-9_-]{1,128}`` are never retained and always absent.
Trinity keeps them on disk, so they outlive an agent-server restart: here they outlive
:meth:`ProcessRegistry.wipe` for the same reason.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SAFE_EXECUTION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
TTL_SECONDS = 6 * 3600.0  # Trinity's RETAINED_RESULT_TTL_SECONDS
MAX_RECORDS = 50  # Trinity's RETAINED_RESULT_MAX_FILES
LOG_MAX_BYTES = 16_000_000  # Trinity's RETAINED_LOG_MAX_BYTES
# Trinity's headless executor answers an HTTP error whose status types the failure; the error types
# the simulator can be told to fail with map to the same (error_code, terminal_reason).
FAILURE_CODES: Mapping[str, tuple[str | None, str]] = {
    "auth": ("auth", "auth"), "rate_limit": ("billing", "rate_limit"),
    "timeout": ("timeout", "max_duration"), "empty_result": (None, "empty_result"),
}


@dataclass(frozen=True, slots=True)
class RetainedResult:
    envelope: Mapping[str, Any]
    retained_at: float  # wall clock, seconds since the epoch
    truncated_log: bool

    def body(self) -> dict[str, Any]:
        """What ``GET /api/executions/{id}/result`` answers: the envelope, when, and whether cut."""
        return {**self.envelope, "retained_at": datetime.fromtimestamp(self.retained_at, UTC).isoformat(),
                "truncated_log": self.truncated_log}


def success_envelope(response: str, log: list[Any], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Trinity's success envelope: no ``error``; the session id rides beside the metadata too."""
    return {"status": "success", "response": response, "execution_log": log, "metadata": dict(metadata),
            "session_id": metadata.get("session_id"), "terminal_reason": "completed"}


def failed_envelope(error_type: str | None, message: str) -> dict[str, Any]:
    """Trinity's failure envelope carries only these five keys (no response, no session id)."""
    error_code, terminal_reason = FAILURE_CODES.get(error_type or "", (None, "error"))
    return {"status": "failed", "error": message[:500], "error_code": error_code,
            "terminal_reason": terminal_reason, "metadata": {}}


def cancelled(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """A run the operator terminated is relabelled a cancel, whatever it ended with (Trinity #679)."""
    return {**envelope, "status": "cancelled", "terminal_reason": "cancelled", "error_code": None}


class RetainedResults:
    def __init__(self, ttl: float = TTL_SECONDS, max_records: int = MAX_RECORDS,
                 log_max_bytes: int = LOG_MAX_BYTES, clock: Callable[[], float] = time.time) -> None:
        self.ttl, self.max_records, self.log_max_bytes = ttl, max_records, log_max_bytes
        self._clock = clock
        self._records: dict[str, RetainedResult] = {}  # oldest write first

    def __len__(self) -> int:
        return len(self._records)

    def record(self, execution_id: str, envelope: Mapping[str, Any]) -> bool:
        """Retain ``envelope`` (over any earlier one for the id); False for an id Trinity refuses."""
        if not SAFE_EXECUTION_ID.fullmatch(execution_id):
            return False
        envelope, truncated = self._bounded(envelope)
        self._records.pop(execution_id, None)  # a rewrite is the newest file
        self._records[execution_id] = RetainedResult(envelope, self._clock(), truncated)
        self._evict(keep=execution_id)
        return True

    def get(self, execution_id: str) -> RetainedResult | None:
        """The record, or None when there is none, it expired (and is dropped) or the id is unsafe."""
        record = self._records.get(execution_id)
        if record is not None and self._clock() - record.retained_at > self.ttl:
            del self._records[execution_id]
            return None
        return record

    def _bounded(self, envelope: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        log = envelope.get("execution_log")
        if log is None or len(json.dumps(log)) <= self.log_max_bytes:
            return dict(envelope), False
        return {**envelope, "execution_log": None}, True

    def _evict(self, keep: str) -> None:
        cutoff = self._clock() - self.ttl
        for execution_id in [i for i, r in self._records.items() if r.retained_at < cutoff and i != keep]:
            del self._records[execution_id]
        excess = len(self._records) - self.max_records
        for execution_id in [i for i in self._records if i != keep][:max(0, excess)]:
            del self._records[execution_id]
