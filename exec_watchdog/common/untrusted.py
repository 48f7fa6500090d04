"""Text from a peer we do not control (an agent's answer), made safe to store and send.

An agent's ``/last-error`` text, its retained envelope's ``error``, ``response`` and log, the body of
its 5xx answers: all of it is data, and it is normalised once, where it enters
(``platform_access/agent_client.py`` and ``platform_access/retained.py``):

- valid Unicode: a lone surrogate (JSON allows ``"\\ud800"``) becomes U+FFFD, so no database
  driver, JSON encoder or log writer ever fails on it;
- no control characters but newline and tab: ``\\r\\n`` and ``\\r`` become ``\\n``; NUL (which
  PostgreSQL refuses in TEXT), the other C0 controls, DEL and the C1 controls are dropped;
- bounded: at most ``limit`` characters, the cut marked with ``…``.
"""

from __future__ import annotations

import re

ELLIPSIS = "…"
REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # every Cc but \t (09) and \n (0a)


def clean(text: str, limit: int) -> str:
    """``text`` as valid Unicode without control characters (newline and tab kept), at most ``limit`` long."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if len(text) > 4 * limit + 16:  # never scan megabytes to keep a few hundred characters
        text = text[:4 * limit + 16]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _SURROGATE.sub(REPLACEMENT, text)
    return text if len(text) <= limit else text[:limit - 1] + ELLIPSIS


def clean_optional(text: str | None, limit: int) -> str | None:
    return None if text is None else clean(text, limit)
