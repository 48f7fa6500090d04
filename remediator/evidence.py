"""Evidence: the facts behind every decision, stored with its audit row.

The reason says what the remediator decided; the evidence says why, in facts an engineer can
check afterwards: the row as read before acting, the agent's answer, the in-flight marker and
retained-result verdicts, ``/last-error``, the silence re-check, the alert and who delivered it,
the guarded update, and how long each step took. Each verdict carries an :class:`Evidence`; every
decision path records into it with one call (``v.evidence.agent_answer(...)``), and
:meth:`Evidence.finish` turns it into JSON for the audit row.

- Bounded: every text is capped, at most ``MAX_LABELS`` labels are kept, the whole is at most
  ``MAX_BYTES``; past that, only the identifying labels stay.
- Never a secret: request headers and tokens are never recorded; configured secrets are replaced
  wherever they appear, and so are URL credentials and the values of secret-looking labels and
  query parameters.
"""

from __future__ import annotations

import json
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property, lru_cache
from typing import Any, TypeVar

from exec_watchdog.common import redaction
from exec_watchdog.platform_access.agent_client import AgentResult, LastError, RunningSnapshot, TerminateOutcome
from exec_watchdog.platform_access.database import BadRow, Execution
from exec_watchdog.platform_access.timestamps import format_utc
from exec_watchdog.remediator.payload import Alert
from exec_watchdog.remediator.silences import SilenceCheck

VERSION = 1
MAX_TEXT = 300
MAX_ERROR_TEXT = 2000  # Trinity caps the failure text it writes at 2,000 characters
MAX_LABELS = 32
MAX_LABEL_NAME = 64
MAX_LABEL_VALUE = 256
MAX_LISTED = 20  # silence ids, unanswered Alertmanagers
MAX_BYTES = 16_384
REDACTED = redaction.REDACTED
IDENTIFYING_LABELS = ("alertname", "agent", "execution_id", "remediation", "schedule_id", "severity")
GUARD = "id = :id AND status = 'running' AND lease_expires_at IS NULL"

_SECRET_NAME = re.compile(r"(?i)secret|token|passw|authoriz|api[_-]?key|credential|cookie")

T = TypeVar("T")


async def timed(call: Awaitable[T]) -> tuple[T, float]:
    """Await ``call``; its result and the seconds it took."""
    started = time.perf_counter()
    result = await call
    return result, time.perf_counter() - started


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


# A batch of a thousand alerts shares its timestamps and label names: format and judge each once.
_stamp = lru_cache(maxsize=256)(format_utc)


@lru_cache(maxsize=1024)
def _secret_label(name: str) -> bool:
    return _SECRET_NAME.search(name) is not None


class Redactor:
    """Takes secrets out of text before it is stored (``common/redaction.py`` has the rules), caps
    its length, and remembers the short texts a batch repeats."""

    def __init__(self, secrets: Iterable[str | None] = (), base: redaction.Redactor | None = None) -> None:
        self._base = base if base is not None else redaction.Redactor()
        self._base.add(*secrets)
        self._done: dict[str, str] = {}

    def text(self, value: object, limit: int = MAX_TEXT) -> str:
        text = value if isinstance(value, str) else str(value)
        if len(text) > 256:
            return self._redacted(text, limit)
        done = self._done.get(text)  # short texts (label names and values, hosts) repeat across a batch
        if done is None:
            if len(self._done) >= 4096:
                self._done.clear()
            done = self._done[text] = self._redacted(text, 256)
        return done if len(done) <= limit else done[:limit - 1] + "…"

    def _redacted(self, text: str, limit: int) -> str:
        text = self._base.text(text)
        return text if len(text) <= limit else text[:limit - 1] + "…"

    def labels(self, labels: Mapping[str, str], names: Iterable[str] | None = None) -> dict[str, str]:
        """Identifying labels first, then the rest by name, up to ``MAX_LABELS``."""
        wanted = list(names) if names is not None else \
            [n for n in IDENTIFYING_LABELS if n in labels] + sorted(n for n in labels if n not in IDENTIFYING_LABELS)
        kept: dict[str, str] = {}
        for name in wanted:
            if name not in labels:
                continue
            if len(kept) == MAX_LABELS:
                break
            kept[self.text(name, MAX_LABEL_NAME)] = REDACTED if _secret_label(name) else \
                self.text(labels[name], MAX_LABEL_VALUE)
        return kept


class DeliveryCounter:
    """Deliveries of each alert (fingerprint and startsAt) this replica has seen; the least recently
    seen are forgotten past ``capacity``, so memory stays bounded."""

    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[tuple[str, datetime], int] = OrderedDict()

    def seen(self, alert: Alert) -> int:
        """Count one more delivery of ``alert``; how many this replica has seen, this one included."""
        key = (alert.fingerprint or repr(sorted(alert.labels.items())), alert.starts_at)
        count = self._seen.pop(key, 0) + 1
        self._seen[key] = count
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return count


@dataclass
class Recorder:
    """One replica's evidence settings: its redactor, its delivery counts, and whether to record."""

    redactor: Redactor = field(default_factory=Redactor)
    deliveries: DeliveryCounter = field(default_factory=DeliveryCounter)
    enabled: bool = True


@dataclass(frozen=True)
class Delivery:
    """One webhook notification as it arrived: who sent it and when."""

    received_at: datetime
    receiver: str = ""
    external_url: str = ""  # the sending Alertmanager's --web.external-url, from the payload
    group_key: str = ""
    peer: str = ""  # host:port of the TCP peer
    user_agent: str = ""
    alerts: int = 0
    truncated_alerts: int = 0
    recorder: Recorder = field(default_factory=Recorder)

    @cached_property
    def facts(self) -> dict[str, Any]:
        """What every alert of this notification shares, redacted once."""
        text = self.recorder.redactor.text
        return {"received_at": format_utc(self.received_at), "receiver": text(self.receiver),
                "alertmanager": text(self.external_url), "peer": text(self.peer),
                "user_agent": text(self.user_agent, 100), "group_key": text(self.group_key),
                "alerts_in_notification": self.alerts, "truncated_alerts": self.truncated_alerts}


class Evidence:
    """The facts one decision was based on, recorded as the remediator learns them."""

    __slots__ = ("_alert", "_calls", "_deliveries_seen", "_delivery", "_facts", "_redact")

    def __init__(self, alert: Alert, delivery: Delivery | None = None) -> None:
        self._alert = alert
        self._delivery = delivery
        recorder = delivery.recorder if delivery is not None else _DEFAULT_RECORDER
        self._redact = recorder.redactor
        self._deliveries_seen = recorder.deliveries.seen(alert) if delivery is not None else 0
        self._facts: dict[str, Any] = {}
        self._calls: dict[str, float] = {}  # outbound call -> milliseconds, in the order made

    def _took(self, call: str, seconds: float | None) -> None:
        if seconds is not None:
            self._calls[call if call not in self._calls else f"{call} ({len(self._calls) + 1})"] = _ms(seconds)

    # -- the hooks: one call per fact, from remediate.py --------------------------------------------

    def row_read(self, row: Execution | BadRow | None, now: datetime, seconds: float | None = None) -> None:
        """The execution's row as read before acting, with its effective timeout and its source."""
        if row is None:
            facts: dict[str, Any] = {"found": False}
        elif isinstance(row, BadRow):
            facts = {"found": True, "readable": False, "problem": self._redact.text(row)}
        else:
            facts = {"found": True, "status": row.status, "agent": self._redact.text(row.agent_name),
                     "schedule_id": self._redact.text(row.schedule_id), "started_at": _stamp(row.started_at),
                     "age_seconds": round(row.runtime_seconds(now), 3), "timeout_seconds": row.timeout_seconds,
                     "timeout_source": row.timeout_source, "leased": row.leased}
        facts["read_at"] = _stamp(now)
        self._facts["row"] = facts
        self._took("database: read the row", seconds)

    def agent_answer(self, answer: AgentResult[RunningSnapshot], seconds: float | None = None) -> None:
        """The agent's ``GET /api/executions/running``: where the execution was in it, and list sizes."""
        facts = self._agent_call("GET /api/executions/running", answer, seconds)
        if answer.value is not None:
            snapshot, execution_id = answer.value, self._alert.execution_id
            running = _running_ids(snapshot)
            facts.update(in_running=execution_id in running, in_pending=execution_id in snapshot.pending_ids,
                         in_recently_completed=execution_id in snapshot.recently_completed_ids,
                         running=len(running), pending=len(snapshot.pending_ids),
                         recently_completed=len(snapshot.recently_completed_ids))
        self._facts["agent"] = facts
        self._took("agent: GET /api/executions/running", seconds)

    def terminate_answer(self, answer: AgentResult[TerminateOutcome], seconds: float | None = None) -> None:
        """The agent's answer to ``POST /api/executions/{id}/terminate``."""
        facts = self._agent_call("POST /api/executions/{id}/terminate", answer, seconds)
        if answer.value is not None:
            facts.update(status=answer.value.status, returncode=answer.value.returncode)
        self._facts["terminate"] = facts
        self._took("agent: POST terminate", seconds)

    def last_error(self, answer: AgentResult[LastError], seconds: float | None = None) -> None:
        """The agent's ``GET /api/executions/{id}/last-error``, where it was asked."""
        facts = self._agent_call("GET /api/executions/{id}/last-error", answer, seconds)
        if answer.value is not None:
            facts.update(error_type=self._optional(answer.value.error_type),
                         error_message=self._optional(answer.value.error_message))
        self._facts["last_error"] = facts
        self._took("agent: GET last-error", seconds)

    def inflight(self, verdict: str, *, marker: Mapping[str, object] | None = None, detail: str = "",
                 seconds: float | None = None) -> None:
        """The in-flight dispatch marker (``execution:inflight:{id}``): alive, absent or unknown."""
        facts: dict[str, Any] = {"verdict": verdict}
        if marker is not None:
            facts["marker"] = {self._redact.text(k, MAX_LABEL_NAME): self._redact.text(v, 100)
                               for k, v in list(marker.items())[:8]}
        if detail:
            facts["detail"] = self._redact.text(detail)
        self._facts["inflight"] = facts
        self._took("in-flight markers: read", seconds)  # Redis, or the embedded table

    def retained_result(self, verdict: str, *, http_status: int | None = None, status: str | None = None,
                        retained_at: str | None = None, detail: str = "", seconds: float | None = None,
                        cost_refused: str | None = None) -> None:
        """The agent's retained result (``GET /api/executions/{id}/result``) and what it decided; a
        cost the claim did not write (negative, NaN, infinite) as the agent sent it."""
        facts: dict[str, Any] = {"asked": "GET /api/executions/{id}/result", "verdict": verdict}
        if cost_refused is not None:
            facts["cost_refused"] = self._redact.text(cost_refused, 100)
        for key, value in (("http_status", http_status), ("status", status), ("retained_at", retained_at)):
            if value is not None:
                facts[key] = value if isinstance(value, int) else self._redact.text(value, 100)
        if detail:
            facts["detail"] = self._redact.text(detail)
        if seconds is not None:
            facts["response_ms"] = _ms(seconds)
        self._facts["retained_result"] = facts
        self._took("agent: GET result", seconds)

    def slot_read(self, held: bool, *, paused: bool, acquired_at: float | None = None, age_seconds: float | None = None,
                  ttl_seconds: float | None = None, hash_timeout_seconds: int | None = None,
                  seconds: float | None = None) -> None:
        """The capacity slot as re-read before acting: held, its score and TTL, and governor:pause."""
        facts: dict[str, Any] = {"held": held, "governor_paused": paused}
        if held:
            facts.update(acquired_at=acquired_at, age_seconds=None if age_seconds is None else round(age_seconds, 3),
                         ttl_seconds=ttl_seconds, hash_timeout_seconds=hash_timeout_seconds)
        self._facts["slot"] = facts
        self._took("slots: read the slot", seconds)

    def silence_check(self, check: SilenceCheck, seconds: float | None = None) -> None:
        """The silence re-check: who answered, who did not, and the active silences matching the alert."""
        matching = [s.id for s in check.silences if s.matches(self._alert.labels)]
        self._facts["silences"] = {
            "answered_by": self._redact.text(check.answered_by), "active": len(check.silences),
            "matching": [self._redact.text(i, 64) for i in matching[:MAX_LISTED]],
            "unanswered": [self._redact.text(u) for u in check.unanswered[:MAX_LISTED]]}
        self._took("alertmanager: GET /api/v2/silences", seconds)

    def silence_check_failed(self, error: object, seconds: float | None = None) -> None:
        self._facts["silences"] = {"answered_by": None, "error": self._redact.text(error, 1000)}
        self._took("alertmanager: GET /api/v2/silences", seconds)

    def guarded_update(self, won: bool, error: str, seconds: float | None = None, *, status: str = "failed",
                       guard: str = GUARD) -> None:
        """The guarded transition (``running -> failed``, or a claim's status): did it change the row,
        and what did it write."""
        self._facts["update"] = {"won": won, "rows_changed": 1 if won else 0,
                                 "wrote": {"status": status, "error": self._redact.text(error, MAX_ERROR_TEXT)}
                                 if won else None}
        if guard != GUARD:  # the usual guard goes without saying (story.describe names it)
            self._facts["update"]["guard"] = guard
        self._took("database: guarded update", seconds)

    # -- turning it into the stored record -----------------------------------------------------------

    def finish(self, replica: str, now: datetime) -> str | None:
        """The evidence as compact JSON, at most ``MAX_BYTES``; ``None`` when nothing is recorded."""
        alert, delivery = self._alert, self._delivery
        facts: dict[str, Any] = {
            "version": VERSION, "replica": self._redact.text(replica, 100), "decided_at": _stamp(now),
            "alert": {"status": alert.status, "labels": self._redact.labels(alert.labels),
                      "labels_total": len(alert.labels), "starts_at": _stamp(alert.starts_at),
                      "fingerprint": self._redact.text(alert.fingerprint, 64),
                      "generator_url": self._redact.text(alert.generator_url)}}
        if delivery is not None:
            facts["delivery"] = {**delivery.facts, "deliveries_seen": self._deliveries_seen}
        facts.update(self._facts)
        timings: dict[str, Any] = {"alert_start_to_decision_s": round((now - alert.starts_at).total_seconds(), 3)}
        if delivery is not None:
            timings["received_to_decision_ms"] = _ms((now - delivery.received_at).total_seconds())
        timings["calls"] = self._calls
        facts["timings"] = timings
        text = json.dumps(facts, separators=(",", ":"))
        if len(text) > MAX_BYTES:  # ASCII-only JSON: characters are bytes
            facts["alert"]["labels"] = self._redact.labels(alert.labels, IDENTIFYING_LABELS)
            facts["truncated"] = ["alert.labels"]
            text = json.dumps(facts, separators=(",", ":"))
        if len(text) > MAX_BYTES:
            text = json.dumps({"version": VERSION, "replica": facts["replica"], "decided_at": facts["decided_at"],
                               "alert": facts["alert"], "truncated": ["everything but the alert"]},
                              separators=(",", ":"))
        return text

    def _agent_call(self, asked: str, answer: AgentResult[Any], seconds: float | None) -> dict[str, Any]:
        facts: dict[str, Any] = {"asked": asked, "answer": answer.kind,
                                 "reachable": answer.kind not in ("unreachable", "timeout")}
        if seconds is not None:
            facts["response_ms"] = _ms(seconds)
        if answer.detail:
            facts["detail"] = self._redact.text(answer.detail)
        return facts

    def _optional(self, value: str | None) -> str | None:
        return None if value is None else self._redact.text(value, 1000)


class Unrecorded(Evidence):
    """Evidence switched off: every hook does nothing and nothing is stored."""

    def __init__(self, alert: Alert | None = None, delivery: Delivery | None = None) -> None:
        pass


def _nothing(self: Evidence, *args: object, **kwargs: object) -> None:
    return None


# Every public method: a hook added to Evidence is switched off here without being listed.
HOOKS = tuple(name for name, value in vars(Evidence).items() if callable(value) and not name.startswith("_"))
for _hook in HOOKS:
    setattr(Unrecorded, _hook, _nothing)

_DEFAULT_RECORDER = Recorder()
_last_running: tuple[RunningSnapshot | None, frozenset[str]] = (None, frozenset())


def _running_ids(snapshot: RunningSnapshot) -> frozenset[str]:
    """The snapshot's running ids, built once for the many verdicts one agent's answer serves."""
    global _last_running
    if _last_running[0] is not snapshot:
        _last_running = (snapshot, snapshot.running_ids)
    return _last_running[1]
UNRECORDED = Unrecorded()


def evidence_for(alert: Alert, delivery: Delivery | None) -> Evidence:
    """The collector a new verdict carries: recording unless the replica switched evidence off."""
    if delivery is not None and not delivery.recorder.enabled:
        return UNRECORDED
    return Evidence(alert, delivery)
