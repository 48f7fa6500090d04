"""Trinity's agent authentication: HMAC-SHA256 over a versioned, per-agent message."""

from __future__ import annotations

import hashlib
import hmac

TOKEN_HEADER = "X-Trinity-Agent-Token"  # noqa: S105 (a header name)
_MESSAGE_PREFIX = "trinity-agent-auth:v1:"


def agent_token(secret: str, agent_name: str) -> str:
    """The lowercase hex token an agent named ``agent_name`` accepts."""
    message = (_MESSAGE_PREFIX + agent_name).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
