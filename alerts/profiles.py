"""The tunables of the rules and the Alertmanager configuration, per profile.

``alerts/profiles.yml`` is the one place they live; this module loads it once and checks it:
every tunable has a ``doc`` and a value for every profile, durations parse, thresholds are
positive. A :class:`Profile` is what the rule and Alertmanager builders read.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

PROFILES: tuple[str, ...] = ("fast", "production")

PROFILES_FILE = Path(__file__).with_name("profiles.yml")

Kind = Literal["duration", "seconds", "count", "text"]


def _tunable(kind: Kind) -> Any:
    return dataclasses.field(metadata={"kind": kind})


@dataclass(frozen=True)
class Profile:
    """One profile's values; field names are the keys of ``profiles.yml``."""

    name: str
    scrape_interval: str = _tunable("duration")
    scrape_timeout: str = _tunable("duration")
    evaluation_interval: str = _tunable("duration")
    alert_resend_delay: str = _tunable("duration")
    runbook_url: str = _tunable("text")
    orphan_min_age_seconds: int = _tunable("seconds")
    orphan_for: str = _tunable("duration")
    completed_unreported_for: str = _tunable("duration")
    claim_defer_seconds: int = _tunable("seconds")
    overdue_default_timeout_seconds: int = _tunable("seconds")
    overdue_for: str = _tunable("duration")
    stuck_threshold_seconds: int = _tunable("seconds")
    stuck_for: str = _tunable("duration")
    stale_grace_seconds: int = _tunable("seconds")
    stale_unowned_seconds: int = _tunable("seconds")
    stale_for: str = _tunable("duration")
    no_session_min_age_seconds: int = _tunable("seconds")
    no_session_for: str = _tunable("duration")
    fleet_unreachable_percent: int = _tunable("count")
    fleet_unreachable_min_agents: int = _tunable("count")
    fleet_unreachable_for: str = _tunable("duration")
    agent_unreachable_for: str = _tunable("duration")
    exporter_down_for: str = _tunable("duration")
    database_unreachable_for: str = _tunable("duration")
    remediator_failing_window: str = _tunable("duration")
    remediator_failing_for: str = _tunable("duration")
    breaker_open_for: str = _tunable("duration")
    group_wait: str = _tunable("duration")
    group_interval: str = _tunable("duration")
    repeat_interval: str = _tunable("duration")
    operator_group_wait: str = _tunable("duration")
    operator_group_interval: str = _tunable("duration")
    operator_repeat_interval: str = _tunable("duration")
    heartbeat_interval: str = _tunable("duration")
    advice_window: str = _tunable("duration")
    advice_min_runs: int = _tunable("count")
    timeout_advice_for: str = _tunable("duration")
    slot_expired_for: str = _tunable("duration")
    slot_unreachable_for: str = _tunable("duration")
    slot_leak_min_age_seconds: int = _tunable("seconds")
    slot_leaked_for: str = _tunable("duration")
    skipped_unfinalized_for: str = _tunable("duration")
    backlog_max_age_seconds: int = _tunable("seconds")
    backlog_expired_for: str = _tunable("duration")
    activity_stale_seconds: int = _tunable("seconds")
    activity_stale_for: str = _tunable("duration")
    shadow_disagreement_window: str = _tunable("duration")

    def seconds(self, tunable: str) -> float:
        """A duration tunable in seconds (``profile.seconds("orphan_for")``)."""
        if _kind(tunable) != "duration":
            raise ProfileError(f"{tunable} is not a duration tunable")
        return duration_seconds(getattr(self, tunable))


class ProfileError(ValueError):
    """profiles.yml is malformed, or a profile name is unknown."""


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
# Prometheus durations: units largest first, each at most once ("1h30m", "90s", "500ms").
_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")


def duration_seconds(value: str) -> float:
    """Parse a Prometheus duration ("0s", "90s", "1h30m", "500ms") into seconds."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not value or match is None or not any(match.groups()):
        raise ValueError(f"not a Prometheus duration: {value!r} (expected e.g. 30s, 5m, 1h30m)")
    units = ("y", "w", "d", "h", "m", "s", "ms")
    return sum(int(n) * _UNITS[u] for n, u in zip(match.groups(), units, strict=True) if n)


def _kind(tunable: str) -> Kind:
    for field in dataclasses.fields(Profile):
        if field.name == tunable and "kind" in field.metadata:
            kind: Kind = field.metadata["kind"]
            return kind
    raise ProfileError(f"unknown tunable {tunable!r}")


def tunable_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(Profile) if "kind" in f.metadata)


@functools.cache
def load_file(path: Path = PROFILES_FILE) -> tuple[dict[str, Profile], dict[str, str]]:
    """Load and check a profiles file (normally alerts/profiles.yml): (profiles by name, docs)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"{path}: cannot read the tunables: {exc}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: expected a mapping of tunables")
    expected = set(tunable_names())
    if missing := expected - raw.keys():
        raise ProfileError(f"{path}: missing tunables {sorted(missing)}")
    if unknown := raw.keys() - expected:
        raise ProfileError(f"{path}: unknown tunables {sorted(unknown)} (add them to alerts/profiles.py)")
    docs: dict[str, str] = {}
    values: dict[str, dict[str, object]] = {p: {} for p in PROFILES}
    for tunable, entry in raw.items():
        if not isinstance(entry, dict) or set(entry) != {"doc", *PROFILES}:
            raise ProfileError(f"{path}: {tunable} must have exactly the keys doc, {', '.join(PROFILES)}")
        if not isinstance(entry["doc"], str) or not entry["doc"].strip():
            raise ProfileError(f"{path}: {tunable} needs a doc saying when to change it")
        docs[tunable] = entry["doc"]
        for name in PROFILES:
            values[name][tunable] = _checked(path, tunable, name, entry[name])
    profiles = {name: Profile(name=name, **vals) for name, vals in values.items()}  # type: ignore[arg-type]
    for profile in profiles.values():
        _check_consistency(path, profile)
    return profiles, docs


def _checked(path: Path, tunable: str, profile: str, value: object) -> object:
    kind = _kind(tunable)
    where = f"{path}: {tunable}.{profile}"
    if kind in ("seconds", "count"):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            unit = "seconds" if kind == "seconds" else "runs"
            raise ProfileError(f"{where}: expected a positive whole number of {unit}, got {value!r}")
        return value
    if not isinstance(value, str) or not value:
        raise ProfileError(f"{where}: expected a string, got {value!r}")
    if kind == "duration":
        try:
            duration_seconds(value)
        except ValueError as exc:
            raise ProfileError(f"{where}: {exc}") from None
    return value


def _check_consistency(path: Path, p: Profile) -> None:
    # Rules Prometheus and Alertmanager would enforce only at start-up, or that break the tests'
    # timing: say so while rendering instead.
    def fail(message: str) -> None:
        raise ProfileError(f"{path}: profile {p.name}: {message}")

    if p.seconds("scrape_timeout") > p.seconds("scrape_interval"):
        fail("scrape_timeout must not exceed scrape_interval")
    for tunable in ("scrape_interval", "evaluation_interval", "group_interval", "repeat_interval",
                    "operator_group_interval", "operator_repeat_interval", "heartbeat_interval"):
        if p.seconds(tunable) <= 0:
            fail(f"{tunable} must be longer than 0s")
    if p.fleet_unreachable_percent > 100:
        fail("fleet_unreachable_percent is a share of the fleet: at most 100")
    for guarded in ("stale_for", "no_session_for"):
        if p.seconds(guarded) <= p.seconds("fleet_unreachable_for") + p.seconds("evaluation_interval"):
            fail(f"{guarded} must be longer than fleet_unreachable_for plus one evaluation, or a partition "
                 "fails runs before the fleet guard inhibits them")
    if p.seconds("remediator_failing_window") < 2 * p.seconds("scrape_interval"):
        fail("remediator_failing_window must span at least two scrapes, or rate() has no data")
    if p.seconds("shadow_disagreement_window") < 2 * p.seconds("scrape_interval"):
        fail("shadow_disagreement_window must span at least two scrapes, or increase() sees no disagreement")


def load_profile(name: str) -> Profile:
    """The named profile; a clear error for a name that is not one of :data:`PROFILES`."""
    if name not in PROFILES:
        raise ProfileError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    return load_file()[0][name]


def tunable_docs() -> dict[str, str]:
    """Each tunable's one-line documentation, from profiles.yml."""
    return dict(load_file()[1])


def profile_settings(name: str) -> dict[str, str | int]:
    """Every tunable of a profile, e.g. for writing prometheus.yml or timing a demo.

    Durations are Prometheus strings (convert with :func:`duration_seconds`); ``group_wait``,
    ``group_interval`` and ``repeat_interval`` are the remediation route's.
    """
    profile = load_profile(name)
    return {tunable: getattr(profile, tunable) for tunable in tunable_names()}


def prometheus_global(name: str) -> dict[str, str]:
    """The ``global`` block of a prometheus.yml running this profile's rules at its timing."""
    profile = load_profile(name)
    return {"scrape_interval": profile.scrape_interval, "scrape_timeout": profile.scrape_timeout,
            "evaluation_interval": profile.evaluation_interval}
