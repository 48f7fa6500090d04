"""Identifiers that end up in URLs: agent names and execution ids are checked before any request.

A database row or an alert label is untrusted input; these checks make sure neither can steer a
request to an address outside the configured agent URL template, while every identifier Trinity can
make is accepted:

- execution ids: the agent server's own safe-id rule, ``[A-Za-z0-9_-]{1,128}`` with any first
  character (``secrets.token_urlsafe(16)`` starts with ``-`` or ``_`` about 1 time in 32);
- agent names: what Trinity's ``sanitize_agent_name`` produces, ``[a-z0-9_.-]`` starting with a
  letter or digit (its Docker container-name rule; the path form also accepts upper case).

In a URL path each identifier is one percent-encoded segment. In a host name (``agent-{name}``) the
name may hold ``.`` as Trinity's may, but never an empty label, and the host it makes is checked
as a whole: labels of 1-63 characters, 253 at most, and never an IP address literal. The request
then still goes to the template's scheme, port and path, carrying the token derived for that very
name, so a dotted name can only reach a host that answers for that name.
"""

from __future__ import annotations

import re
import socket
from urllib.parse import quote

_AGENT_IN_PATH = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_AGENT_IN_HOST = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")
_EXECUTION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")


class InvalidIdentifier(ValueError):
    """An agent name or execution id that cannot be used safely in a request."""


def check_agent_name(name: object, *, in_host: bool = False) -> str:
    if in_host:
        if isinstance(name, str) and _AGENT_IN_HOST.fullmatch(name) and ".." not in name and not name.endswith("."):
            return name
        raise InvalidIdentifier(
            f"agent name {name!r} is not safe in a host name (lowercase letters, digits, '_', '.', '-', "
            "starting with a letter or digit, at most 128, no empty label)")
    if isinstance(name, str) and _AGENT_IN_PATH.fullmatch(name):
        return name
    raise InvalidIdentifier(
        f"agent name {name!r} is not safe in a URL path (letters, digits, '_', '.', '-', "
        "starting with a letter or digit, at most 128)")


def check_execution_id(execution_id: object) -> str:
    if isinstance(execution_id, str) and _EXECUTION_ID.fullmatch(execution_id):
        return execution_id
    raise InvalidIdentifier(
        f"execution id {execution_id!r} is not safe in a URL (letters, digits, '_', '-', at most 128)")


def path_segment(value: str) -> str:
    """One URL path segment: every character outside the unreserved set is percent-encoded."""
    return quote(value, safe="")


def check_host(host: str, name: str) -> str:
    """The host an agent name made: DNS-shaped labels, and never an address literal."""
    labels = host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise InvalidIdentifier(
            f"agent name {name!r} makes host {host!r}: every label must be 1-63 characters, 253 in all")
    try:
        socket.inet_aton(host)  # the resolver would take it as an IPv4 address ("1.2", "0x7f.1" too)
    except OSError:
        return host
    raise InvalidIdentifier(f"agent name {name!r} makes host {host!r}, an IP address: not an agent name")


def execution_path(execution_id: str, action: str) -> str:
    """``/api/executions/{id}/{action}`` with the id checked and encoded."""
    return f"/api/executions/{path_segment(check_execution_id(execution_id))}/{action}"
