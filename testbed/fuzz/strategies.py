"""Hypothesis strategies for hostile webhook input: broken notifications, fuzzed labels, bytes that
are not JSON, arbitrary JSON documents."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from exec_watchdog.testbed.fuzz.world import REMEDIABLE
from exec_watchdog.testbed.notifications import alert, notification


def json_bytes(body: object) -> bytes:
    """JSON as bytes; ASCII escapes keep lone surrogates expressible (they are valid JSON text)."""
    return json.dumps(body, ensure_ascii=True).encode()


HOSTILE = [
    # SQL injection
    "'; DROP TABLE schedule_executions;--", "x'; DROP TABLE schedule_executions;--", "e-orphan' OR '1'='1",
    "e-orphan'--", '" OR ""="', "1; DELETE FROM watchdog_recoveries", "e-orphan') OR ('a'='a",
    "a1 UNION SELECT agent_name FROM agent_ownership", "%", "_", "e-%", "*",
    # path and URL steering
    "../admin", "../../admin", "..", ".", "a1/../a2", "a1/..", "..%2fadmin", "%2e%2e", "a1%2f..", "a1\\..\\a2",
    "/etc/passwd", "a1/api/executions/e-orphan/terminate", "e-orphan/terminate", "e-orphan?x=1", "a1#frag",
    "a1@evil.example", "evil.example:80", "//evil.example/x", "http://evil.example/", "a1:8000@evil.example",
    "a1.evil.example", "localhost", "127.0.0.1", "[::1]", "a1%00", "e-orphan%20",
    # control characters, whitespace and look-alikes
    "a1\x00", "e-orphan\x00", "a1\n", "e-orphan\r\nX-Injected: 1", "\t", "a1 ", " a1", "", "A1", "E-ORPHAN",
    "\uff41\uff11", "a1\u200b", "a\u0301", "\u202ea1", "\ud800", "e-orphan\udfff", "a1\x7f", "\U0001f642", "\ufeffa1",
    # length
    "a" * 64, "e" * 129, "x" * 5000,
]
any_chars = st.characters() | st.characters(categories=["Cs"]) | st.characters(categories=["Cc"])
hostile_text = (
    st.sampled_from(HOSTILE)
    | st.text(any_chars, max_size=70)
    | st.builds(lambda a, b, c: a + b + c, st.sampled_from(["a1", "a2", "e-orphan", "e-overdue", ""]),
                st.sampled_from(HOSTILE), st.text(any_chars, max_size=4))
)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(any_chars, max_size=30)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(any_chars, max_size=8), inner, max_size=4), max_leaves=12)
non_strings = json_values.filter(lambda v: not isinstance(v, str))


def _nested(depth: int, leaf: object = "x") -> object:
    value: object = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def _unparseable_timestamp(text: str) -> bool:
    probe = text.strip()
    if not probe:
        return True
    try:
        datetime.fromisoformat(probe[:-1] + "+00:00" if probe[-1:] in "Zz" else probe)
    except ValueError:
        return True
    return False


bad_timestamps = (
    st.sampled_from(["soon", "", " ", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-01-01T25:00:00Z",
                     "1e10", "0", "yesterday", "2026-01-01T00:00:00ZZ", "2026-01-01T00:00:00+25:00",
                     # in range as written, out of range once moved to UTC
                     "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
    | st.text(any_chars, max_size=40).filter(_unparseable_timestamp)
    | non_strings
)


@st.composite
def broken_notifications(draw: st.DrawFn) -> dict[str, Any]:
    """A valid notification for a remediable execution, then one change that must stop it."""
    remediation, agent, execution_id = draw(st.sampled_from(sorted(REMEDIABLE)))
    body = notification(alert(execution_id, agent, remediation))
    a = body["alerts"][0]
    labels = a["labels"]
    mutation = draw(st.sampled_from([
        "drop_top", "drop_alert", "top_type", "alert_type", "version", "group_status", "alert_status",
        "label_value_type", "agent", "execution_id", "remediation", "drop_label", "timestamp", "fingerprint",
        "nested", "alerts_type", "truncated",
    ]))
    if mutation == "drop_top":
        del body[draw(st.sampled_from(["version", "status", "alerts"]))]
    elif mutation == "drop_alert":
        del a[draw(st.sampled_from(["status", "labels", "startsAt"]))]
    elif mutation == "top_type":
        body[draw(st.sampled_from(["receiver", "groupKey", "externalURL"]))] = draw(non_strings)
    elif mutation == "alert_type":
        key = draw(st.sampled_from(["labels", "annotations", "startsAt", "endsAt", "fingerprint", "generatorURL"]))
        a[key] = draw(json_values.filter(lambda v: not isinstance(v, dict if key in ("labels", "annotations")
                                                                   else str)))
    elif mutation == "version":
        body["version"] = draw(json_values.filter(lambda v: v != "4")
                               | st.sampled_from(["3", "5", "4 ", " 4", "v4", "4.0", "04", "", 4, 4.0]))
    elif mutation == "group_status":
        body["status"] = draw(json_values.filter(lambda v: v not in ("firing", "resolved"))
                              | st.sampled_from(["Firing", "FIRING", "firing ", "fired", ""]))
    elif mutation == "alert_status":
        a["status"] = draw(json_values.filter(lambda v: v != "firing") | st.just("resolved"))
    elif mutation == "label_value_type":
        labels[draw(st.sampled_from(["agent", "execution_id", "remediation", "alertname", "other"]))] = \
            draw(non_strings)
    elif mutation in ("agent", "execution_id", "remediation"):
        original = labels[mutation]
        labels[mutation] = draw(hostile_text.filter(lambda v: v != original))
    elif mutation == "drop_label":
        del labels[draw(st.sampled_from(["agent", "execution_id", "remediation"]))]
    elif mutation == "timestamp":
        a["startsAt"] = draw(bad_timestamps)
    elif mutation == "fingerprint":
        a["fingerprint"] = draw(st.text(any_chars, min_size=65, max_size=300))
    elif mutation == "nested":
        depth = draw(st.integers(2, 100))  # deeper ones: test_deeply_nested_bodies_get_400
        where = draw(st.sampled_from(["label", "annotation", "alerts", "version"]))
        if where == "label":
            labels["agent"] = _nested(depth)
        elif where == "annotation":
            a["annotations"]["summary"] = _nested(depth)
        elif where == "alerts":
            body["alerts"] = [_nested(depth, a)]
        else:
            body["version"] = _nested(depth, "4")
    elif mutation == "alerts_type":
        body["alerts"] = draw(json_values.filter(lambda v: not isinstance(v, list)))
    else:
        body["truncatedAlerts"] = draw(json_values.filter(
            lambda v: not (isinstance(v, int) and not isinstance(v, bool) and v >= 0)))
    return body


@st.composite
def hostile_alerts(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed alert whose identity labels are fuzzed (never one of the remediable pairs)."""
    remediation = draw(st.sampled_from(["fail_orphan", "terminate_overdue"]) | hostile_text)
    agent = draw(st.sampled_from(["a1", "a2"]) | hostile_text)
    execution_id = draw(st.sampled_from(["e-orphan", "e-overdue", "e-running", "e-hostile-agent",
                                         "e-at-agent", "x'; DROP TABLE schedule_executions;--"]) | hostile_text)
    assume((remediation, agent, execution_id) not in REMEDIABLE)
    extra = draw(st.dictionaries(st.text(any_chars, max_size=10), st.text(any_chars, max_size=30), max_size=3))
    body = alert(execution_id, agent, remediation, status=draw(st.sampled_from(["firing", "resolved"])))
    body["labels"] = {**extra, **body["labels"]}
    body["annotations"] = draw(st.dictionaries(st.text(any_chars, max_size=10), st.text(any_chars, max_size=50),
                                               max_size=3))
    return body


def _corrupted(data: bytes, draw: st.DrawFn) -> bytes:
    where = draw(st.integers(0, len(data) - 1))
    how = draw(st.sampled_from(["truncate", "insert", "replace"]))
    if how == "truncate":
        return data[:where]
    junk = draw(st.binary(min_size=1, max_size=8) | st.sampled_from([b"\x00", b"\xff", b"\xed\xa0\x80", b"{", b"]",
                                                                     b'"', b"\\", b",", b"NaN"]))
    return data[:where] + junk + data[where + (0 if how == "insert" else 1):]


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


@st.composite
def malformed_bytes(draw: st.DrawFn) -> bytes:
    """Bytes that are not a JSON document: random, or a valid payload cut or corrupted."""
    choice = draw(st.sampled_from(["random", "corrupt", "encoding"]))
    if choice == "random":
        data = draw(st.binary(max_size=500))
    elif choice == "corrupt":
        data = _corrupted(json_bytes(notification(alert("e-orphan", "a1"))), draw)
    else:  # not UTF-8: e-acute in Latin-1 is a lone continuation byte
        text = json.dumps(notification(alert("e-orphan", "a1", summary="\xe9t\xe9")), ensure_ascii=False)
        data = text.encode(draw(st.sampled_from(["latin-1", "cp1252"])))
    assume(not _is_json(data))  # a corruption that left valid JSON (a changed letter) is another case
    return data
