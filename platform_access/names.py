"""Identifiers that end up in URLs: agent names and execution ids are checked before any request.

A database row or an alert label is untrusted input; these checks make sure neither can steer a
request to an address outside the configured agent URL template.
"""

from __future__ import annotations

import re

# Trinity agent names are container-name-like; in a host name they must be one DNS label.
_AGENT_IN_PATH = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_AGENT_IN_HOST = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_EXECUTION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


class InvalidIdentifier(ValueError):
    """An agent name or execution id that cannot be used safely in a request."""


def check_agent_name(name: object, *, in_host: bool = False) -> str:
    pattern = _AGENT_IN_HOST if in_host else _AGENT_IN_PATH
    if not isinstance(name, str) or not pattern.fullmatch(name) or ".." in name:
        where = "a host name (lowercase letters, digits, inner hyphens, at most 63)" if in_host else (
            "a URL path (letters, digits, '_', '.', '-', at most 63, no '..')")
        raise InvalidIdentifier(f"agent name {name!r} is not safe in {where}")
    return name


def check_execution_id(execution_id: object) -> str:
    if not isinstance(execution_id, str) or not _EXECUTION_ID.fullmatch(execution_id) or ".." in execution_id:
        raise InvalidIdentifier(
            f"execution id {execution_id!r} is not safe in a URL "
            "(letters, digits, '_', '.', ':', '-', at most 128, no '..')")
    return execution_id
