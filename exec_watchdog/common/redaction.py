"""Secrets never leave in what we store or send: the one place that takes them out of text.

Two kinds of secret are replaced by ``[redacted]``:

- **known secrets**: every secret the process holds (the agents' HMAC secret, the webhook bearer
  token and basic-auth password, the database and Redis passwords) and each agent's derived token,
  registered as the agent client derives it. Wherever one appears, in whatever text, it goes;
  values shorter than ``MIN_SECRET_CHARS`` are not registered (they would redact ordinary words),
  nor pieces of the marker itself;
- **credential shapes**, whoever's they are: a URL's ``user:password@`` or ``token@`` (the whole
  userinfo goes), query parameters with secret-looking names (``?access_token=…``), ``Bearer …`` and
  ``Authorization: …`` values, and assignments to secret-looking names in environment, libpq,
  query-string and JSON forms (``AGENT_AUTH_SECRET=…``, ``password=…``, ``password='a b'``,
  ``?access_token=…``, ``"api_key": "…"``): the name stays, the value goes.

Who uses it: the agent client on every text an agent sends (``platform_access/agent_client.py``),
the remediator on every decision reason, recovery row, announcement, story and evidence value, and
the log processor (``common/logs.py``) on every log line. ``redacted_url`` (for error messages that
name a database or Redis URL) is the URL shape alone, with ``***``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 6
MAX_KNOWN_SECRETS = 100_000  # agents' derived tokens: one per agent ever called (then the shapes only)

_SECRET_NAME = re.compile(r"(?i)passw(?:or)?d|pwd|secret|token|api[_-]?key|_key|credential")
_SECRET_PARAM = re.compile(r"(?i)secret|token|passw|key|auth|credential|signature")
_TOKEN = re.compile(r"[0-9a-f]{64,}")  # an agent's derived token: HMAC-SHA256 in lowercase hex
TOKEN_CHARS = 64
_WORD = r"[A-Za-z0-9_.-]"


def _if_secret_name(name_group: int, keep: Callable[[re.Match[str]], str],
                    names: re.Pattern[str] = _SECRET_NAME) -> Callable[[re.Match[str]], str]:
    """A replacement that redacts only when the matched name looks like a secret's."""
    def replace(m: re.Match[str]) -> str:
        return keep(m) if names.search(m[name_group]) else m[0]
    return replace


# Every pattern matches in linear time: names are whole runs (a look-behind where they start,
# possessive quantifiers), whether a name is a secret's is decided after the match, not by
# backtracking through it, and the one backtracking part (a URL's userinfo) is bounded.
_SHAPES: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # scheme://user:password@host and scheme://token@host: the whole userinfo (a user name can be a token)
    # (a password is often written with its '/' unescaped: after "user:", anything up to the last '@')
    # (bounded: a userinfo is at most 1,024 characters, so no start is scanned further than that)
    (re.compile(r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]{0,30}+://)(?:[^/?#\s@:]{0,1024}+:\S{0,1024}|"
                r"[^/?#\s@]{1,1024}+)@"),
     r"\1" + REDACTED + "@"),
    # a query parameter with a secret-looking name: ?access_token=x, &X-Amz-Signature=x (name stays)
    (re.compile(r"([?&;])([^=&#\s?;]++)=([^&#\s]*+)"),
     _if_secret_name(2, lambda m: f"{m[1]}{m[2]}={REDACTED}", _SECRET_PARAM)),
    # Authorization: Bearer x / Basic x, X-Trinity-Agent-Token: x, and a bare Bearer x
    (re.compile(r"(?i)\b((?:proxy-)?authorization|x-trinity-agent-token)(\s*+[:=]\s*+)"
                r"(?:(?:bearer|basic|token|digest)\s++)?[^\s,;\"']++"), r"\1\2" + REDACTED),
    (re.compile(r"(?i)\b(bearer\s++)[A-Za-z0-9._~+/=-]++"), r"\1" + REDACTED),
    # "password": "x" (JSON) or 'token': 'x' (a printed dict): the quotes stay
    (re.compile(r"""(["'])(""" + _WORD + r"""++)\1(\s*+[:=]\s*+)(?:(["'])((?:(?!\4)[^\\]|\\.)*+)\4|([^\s,;}'"]++))"""),
     _if_secret_name(2, lambda m: f"{m[1]}{m[2]}{m[1]}{m[3]}{m[4] or ''}{REDACTED}{m[4] or ''}")),
    # NAME=value / NAME: value, quoted or bare (environment, libpq, YAML, headers)
    (re.compile(r"(?<![A-Za-z0-9_.-])(" + _WORD + r"++)(\s*+[=:]\s*+)(?:'[^']*+'|\"[^\"]*+\"|(?!//)[^\s&;,'\"]++)"),
     _if_secret_name(1, lambda m: f"{m[1]}{m[2]}{REDACTED}")),
)


class Redactor:
    """Replaces known secrets and credential shapes; secrets can be added while it is in use.

    Agents' derived tokens (one per agent, 64 hex characters) are looked up in a set for every run
    of hex in the text, so a fleet of thousands of agents costs one scan, not one per agent.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._lock = threading.Lock()
        self._tokens: frozenset[str] = frozenset()
        self._others: tuple[str, ...] = ()  # longest first: a secret containing another goes whole
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        # A piece of the marker itself cannot be told apart from the marker: not a real secret anyway.
        fresh = {s for s in secrets if s and len(s) >= MIN_SECRET_CHARS and s not in REDACTED}
        tokens = {s for s in fresh if len(s) == TOKEN_CHARS and _TOKEN.fullmatch(s)}
        others = fresh - tokens
        with self._lock:
            if not tokens <= self._tokens and len(self._tokens) < MAX_KNOWN_SECRETS:
                self._tokens = self._tokens | tokens
            if not others <= set(self._others):
                self._others = tuple(sorted(set(self._others) | others, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        return self.text(text)

    def text(self, text: str) -> str:
        """``text`` with every known secret and every credential shape replaced."""
        original = text
        text = self._known(text)
        if "=" in text or ":" in text or "earer" in text.lower():  # every shape needs one of them
            for pattern, replacement in _SHAPES:
                text = pattern.sub(replacement, text)
        # A replacement can join the text around it into a known secret again (one that shares
        # characters with the marker): then nothing of the text is kept. Unchanged text held none.
        return REDACTED if text is not original and text != original and self._survives(text) else text

    def known(self, text: str) -> str:
        """``text`` with the known secrets replaced, the shapes left alone: for a run's own output
        (its response and transcript), where ``password=`` may be what the user asked about."""
        original = text
        text = self._known(text)
        return REDACTED if text != original and self._survives(text) else text

    def _known(self, text: str) -> str:
        for secret in self._others:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if self._tokens and len(text) >= TOKEN_CHARS:
            text = _TOKEN.sub(self._hex_run, text)
        return text

    def _hex_run(self, match: re.Match[str]) -> str:
        run, tokens = match.group(), self._tokens
        if len(run) == TOKEN_CHARS:
            return REDACTED if run in tokens else run
        out, start = [], 0
        for i in range(len(run) - TOKEN_CHARS + 1):
            if i >= start and run[i:i + TOKEN_CHARS] in tokens:
                out += [run[start:i], REDACTED]
                start = i + TOKEN_CHARS
        return "".join(out) + run[start:]

    def _survives(self, text: str) -> bool:
        if any(secret in text for secret in self._others):
            return True
        return bool(self._tokens) and any(
            run[i:i + TOKEN_CHARS] in self._tokens
            for run in _TOKEN.findall(text) for i in range(len(run) - TOKEN_CHARS + 1))


PROCESS = Redactor()
"""The process's own redactor: the services register what they hold at start."""


def redact(text: str) -> str:
    """``text`` through the process's redactor."""
    return PROCESS.text(text)


def secrets_of_url(url: str | None) -> tuple[str, ...]:
    """The password a database or Redis URL carries, as written and decoded, to register as known secrets."""
    if not url:
        return ()
    try:
        password = urlsplit(url).password
    except ValueError:
        return ()
    return () if not password else (password, unquote(password))


def redacted_url(url: str) -> str:
    """``scheme://user:***@host/...`` for any URL with a password; the URL unchanged otherwise."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"  # cannot tell where a password would be in it
    if password is None:
        # Not parsed as a URL with credentials (e.g. "redis//:pw@host"): mask what looks like one.
        head, at, tail = url.rpartition("@")
        return f"{head.rpartition(':')[0]}:***@{tail}" if at and ":" in head else url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
