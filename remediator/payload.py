"""Alertmanager webhook payloads (version 4), parsed once at the edge into frozen objects.

Handlers never touch the raw JSON: anything that does not have the documented shape is a
:class:`PayloadError` whose message says what is wrong, and the webhook answers 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal

from exec_watchdog.common.contract import REMEDIATION_LABEL
from exec_watchdog.platform_access.timestamps import BadTimestamp, parse_utc

SUPPORTED_VERSION = "4"
ZERO_TIME = "0001-01-01T00:00:00Z"  # what Alertmanager sends as endsAt of a firing alert


class PayloadError(ValueError):
    """The body is not an Alertmanager webhook payload we understand."""


@dataclass(frozen=True, slots=True)
class Alert:
    status: Literal["firing", "resolved"]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime | None
    fingerprint: str
    generator_url: str

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def remediation(self) -> str:
        return self.labels.get(REMEDIATION_LABEL, "")

    @property
    def agent(self) -> str:
        return self.labels.get("agent", "")

    @property
    def execution_id(self) -> str:
        """The subject: the execution, or for an activity alert (no ``execution_id``) the activity."""
        return self.labels.get("execution_id") or self.labels.get("activity_id", "")


@dataclass(frozen=True, slots=True)
class Notification:
    receiver: str
    status: Literal["firing", "resolved"]
    alerts: tuple[Alert, ...]
    group_key: str
    external_url: str
    truncated_alerts: int


def _checked(value: str, where: str) -> str:
    """Text a database and a JSON encoder accept: no NUL, no unpaired surrogate."""
    if "\x00" in value:
        raise PayloadError(f"{where} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError(f"{where} contains an unpaired surrogate (not valid Unicode)") from None
    return value


def _str_map(value: object, where: str) -> Mapping[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise PayloadError(f"{where} must be an object of string values")
    return MappingProxyType({_checked(k, f"{where} key"): _checked(v, f"{where}.{k[:40]}")
                             for k, v in value.items()})


def _status(value: object, where: str) -> Literal["firing", "resolved"]:
    if value == "firing":
        return "firing"
    if value == "resolved":
        return "resolved"
    raise PayloadError(f"{where} must be 'firing' or 'resolved', got {value!r:.40}")


def _text(obj: dict[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = obj.get(key, None if required else "")
    if not isinstance(value, str):
        raise PayloadError(f"{where}.{key} must be a string")
    return _checked(value, f"{where}.{key}")


def _time(value: str, where: str) -> datetime:
    try:
        return parse_utc(value)
    except BadTimestamp as exc:
        raise PayloadError(f"{where}: {exc}") from None


def _alert(raw: object, index: int) -> Alert:
    where = f"alerts[{index}]"
    if not isinstance(raw, dict):
        raise PayloadError(f"{where} must be an object")
    starts_at = _time(_text(raw, "startsAt", where), f"{where}.startsAt")
    ends_raw = _text(raw, "endsAt", where, required=False)
    ends_at = None if ends_raw in ("", ZERO_TIME) else _time(ends_raw, f"{where}.endsAt")
    fingerprint = _text(raw, "fingerprint", where, required=False)
    if len(fingerprint) > 64:
        raise PayloadError(f"{where}.fingerprint is longer than 64 characters")
    return Alert(
        status=_status(raw.get("status"), f"{where}.status"),
        labels=_str_map(raw.get("labels"), f"{where}.labels"),
        annotations=_str_map(raw.get("annotations", {}), f"{where}.annotations"),
        starts_at=starts_at,
        ends_at=ends_at,
        fingerprint=fingerprint,
        generator_url=_text(raw, "generatorURL", where, required=False),
    )


def parse_notification(body: object) -> Notification:
    """Turn a decoded JSON body into a :class:`Notification` or raise :class:`PayloadError`."""
    if not isinstance(body, dict):
        raise PayloadError("body must be a JSON object (an Alertmanager webhook payload)")
    if body.get("version") != SUPPORTED_VERSION:
        raise PayloadError(f"unsupported payload version {body.get('version')!r:.20}: this webhook speaks version 4")
    alerts = body.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("'alerts' must be a list")
    truncated = body.get("truncatedAlerts", 0)
    if not isinstance(truncated, int) or isinstance(truncated, bool) or truncated < 0:
        raise PayloadError("'truncatedAlerts' must be a non-negative integer")
    return Notification(
        receiver=_text(body, "receiver", "payload", required=False),
        status=_status(body.get("status"), "status"),
        alerts=tuple(_alert(a, i) for i, a in enumerate(alerts)),
        group_key=_text(body, "groupKey", "payload", required=False),
        external_url=_text(body, "externalURL", "payload", required=False),
        truncated_alerts=truncated,
    )
