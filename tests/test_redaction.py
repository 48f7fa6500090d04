"""The rules for untrusted text, property-tested: normalisation (``common/untrusted.py``) and
redaction (``common/redaction.py``). A known secret or a credential shape embedded anywhere in
arbitrary text never survives; text with neither comes out unchanged."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import unicodedata

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from exec_watchdog.common import redaction
from exec_watchdog.common.redaction import REDACTED, Redactor, secrets_of_url
from exec_watchdog.common.untrusted import clean
from exec_watchdog.platform_access.auth import agent_token

# Any code point, lone surrogates included (json.loads hands them out for "\ud800").
ANY_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=300)
SECRET_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)  # what passwords and tokens are made of
SECRETS = st.text(alphabet=SECRET_CHARS, min_size=redaction.MIN_SECRET_CHARS, max_size=40).filter(
    lambda s: s not in REDACTED)  # a piece of the marker is not registered (test below)
VALUES = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~+/", min_size=6,
                 max_size=30)
# Text that holds no credential shape: no '=', ':', '@', quotes or letters that could spell a name.
PLAIN = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF,
                                       blacklist_characters="=:@'\"&?;", blacklist_categories=("Lu", "Ll")),
                max_size=200)
TOKENS = st.binary(min_size=1, max_size=20).map(lambda name: hmac.new(b"k", name, hashlib.sha256).hexdigest())


# -- normalisation ------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(ANY_TEXT, st.integers(min_value=1, max_value=400))
def test_clean_text_is_valid_unicode_without_controls_and_bounded(text: str, limit: int) -> None:
    out = clean(text, limit)
    out.encode("utf-8")  # a lone surrogate would raise here (and in every database driver)
    assert len(out) <= limit
    assert all(c in "\n\t" or unicodedata.category(c) != "Cc" for c in out)
    assert "\x00" not in out


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x10FFFF, blacklist_categories=("Cs", "Cc")),
               max_size=200).map(lambda t: t.replace("\x7f", "")), st.sampled_from(["", "\n", "\t"]))
def test_clean_leaves_clean_text_as_it_is(text: str, whitespace: str) -> None:
    assert clean(text + whitespace + text, 1_000) == text + whitespace + text


def test_clean_says_where_it_cut_and_refuses_a_useless_limit() -> None:
    assert clean("x" * 10, 5) == "xxxx…"
    assert clean("a\r\nb\rc", 10) == "a\nb\nc"
    assert clean("\ud800", 5) == "\ufffd"
    with pytest.raises(ValueError, match="at least 1"):
        clean("x", 0)


# -- redaction: known secrets -------------------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(ANY_TEXT, st.lists(SECRETS, min_size=1, max_size=4), ANY_TEXT, st.data())
def test_a_known_secret_anywhere_never_survives(before: str, secrets: list[str], after: str,
                                                data: st.DataObject) -> None:
    redactor = Redactor(secrets)
    secret = data.draw(st.sampled_from(secrets))
    for out in (redactor.text(before + secret + after), redactor.known(before + secret + after)):
        for s in secrets:
            assert s not in out


@settings(max_examples=200, deadline=None)
@given(st.lists(TOKENS, min_size=1, max_size=50), st.text(alphabet="0123456789abcdef", max_size=80),
       st.text(alphabet="0123456789abcdef", max_size=80), st.data())
def test_an_agents_derived_token_never_survives_even_inside_a_longer_run_of_hex(
        tokens: list[str], before: str, after: str, data: st.DataObject) -> None:
    redactor = Redactor(tokens)
    token = data.draw(st.sampled_from(tokens))
    out = redactor.text(before + token + after)
    assert token not in out and REDACTED in out


@settings(max_examples=300, deadline=None)
@given(PLAIN, st.lists(SECRETS, max_size=3))
def test_text_without_secrets_or_credential_shapes_is_unchanged(text: str, secrets: list[str]) -> None:
    redactor = Redactor(s for s in secrets if s not in text)
    assert redactor.text(text) == text
    assert redactor.known(text) == text


def test_a_secret_that_the_marker_would_complete_takes_the_whole_text() -> None:
    """Replacing one occurrence must not assemble another out of the marker and its neighbours."""
    tricky = "acted]xyz"
    assert tricky not in Redactor([tricky]).text("[red" + tricky + "xyz")


def test_secrets_too_short_to_tell_from_words_or_pieces_of_the_marker_are_not_registered() -> None:
    assert Redactor(["abc", "", None]).text("abc") == "abc"
    assert Redactor(["redacted"]).text("x [redacted] y") == "x [redacted] y"


# -- redaction: credential shapes ---------------------------------------------------------------------

SHAPES = [
    "password={v}", "PASSWORD={v}", "password='{v} with spaces'", "passwd={v}", "pwd={v}",
    "AGENT_AUTH_SECRET={v}", "TRINITY_AGENT_AUTH_TOKEN={v}", "DB_PASSWORD={v}", "OPENAI_API_KEY={v}",
    "SIGNING_KEY=\"{v}\"", "api_key: {v}", '"api_key": "{v}"', "{{'token': '{v}'}}",
    "postgresql://watch:{v}@db:5432/trinity", "redis://:{v}@cache:6379/0", "https://{v}@git.example/x",
    "Authorization: Bearer {v}", "authorization={v}", "X-Trinity-Agent-Token: {v}", "bearer {v}",
    "https://h/p?access_token={v}&x=1", "http://h/cb?client_secret={v}",
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SHAPES), VALUES, PLAIN, PLAIN)
def test_a_credential_shape_anywhere_loses_its_value(shape: str, value: str, before: str, after: str) -> None:
    # "https://ab/@host" is host "ab" by URL grammar; a userinfo without a colon has no '/' in it.
    assume(not shape.startswith("https://{v}@") or "/" not in value)
    written = shape.format(v=value)
    out = Redactor().text(f"{before} {written} {after}")
    assert out.startswith(before + " ") and out.endswith(" " + after)  # nothing around it is touched
    middle = out[len(before) + 1:len(out) - len(after) - 1]
    assert value not in middle, (written, middle)


@pytest.mark.parametrize(("text", "expected"), [
    ("host=db password=s3cr3t dbname=trinity", "host=db password=[redacted] dbname=trinity"),
    ("DATABASE_URL=postgresql://u:p@ss@db/x", "DATABASE_URL=postgresql://[redacted]@db/x"),
    ('{"password": "a\\"b", "ok": 1}', '{"password": "[redacted]", "ok": 1}'),
    ("http://host:8080/path and a@b.example", "http://host:8080/path and a@b.example"),
    ("Execution auto-terminated after 2 minutes by watchdog (exceeded timeout of 60s)",
     "Execution auto-terminated after 2 minutes by watchdog (exceeded timeout of 60s)"),
])
def test_the_shapes_take_the_value_and_keep_the_rest(text: str, expected: str) -> None:
    assert Redactor().text(text) == expected


def test_known_only_leaves_a_runs_own_output_alone_but_its_secrets() -> None:
    """A response explaining ``password=`` keeps it; the process's own secret still goes."""
    redactor = Redactor(["hunter2-hunter2"])
    assert redactor.known("set password=example, not hunter2-hunter2") == f"set password=example, not {REDACTED}"


def test_redacting_a_json_transcript_keeps_it_json() -> None:
    token = agent_token("backend-secret", "a1")
    transcript = json.dumps([{"role": "tool", "content": f"env: TOKEN={token} and \"quoted\""}])
    out = Redactor([token]).known(transcript)
    assert token not in out and json.loads(out)[0]["content"].startswith("env: TOKEN=[redacted]")


def test_database_and_redis_passwords_are_known_as_written_and_decoded() -> None:
    assert secrets_of_url("postgresql+psycopg://u:p%40ss-word@db/x") == ("p%40ss-word", "p@ss-word")
    assert secrets_of_url("redis://:cache-pw-1@h:6379/0") == ("cache-pw-1", "cache-pw-1")
    assert secrets_of_url("sqlite:///trinity.db") == () and secrets_of_url(None) == ()
    redactor = Redactor(secrets_of_url("redis://:cache-pw-1@h:6379/0"))
    assert "cache-pw-1" not in redactor.text("AUTH failed for cache-pw-1")


def test_a_fleet_of_agents_tokens_costs_one_scan() -> None:
    """Thousands of derived tokens are a set lookup per run of hex, not a search per token."""
    tokens = [agent_token("s", f"agent-{i}") for i in range(5_000)]
    redactor = Redactor(tokens)
    text = "ordinary text " * 100 + tokens[4_321] + " and a sha256 " + "ab" * 32
    out = redactor.text(text)
    assert tokens[4_321] not in out and "ab" * 32 in out  # a digest that is nobody's token stays
    assert re.search(REDACTED, out)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("hostile", [
    "token-" * 8_000 + ":", "a-" * 25_000 + "token:", "token." * 8_000 + "=", "@" + "a://" * 12_000 + ":",
    "a://x:" * 8_000 + "@", '"token"' * 7_000 + ":", "?token" * 8_000, "password " * 5_000 + ":",
])
def test_hostile_text_is_redacted_in_linear_time(hostile: str) -> None:
    """Catastrophic backtracking guard: nested name patterns took 10 s on 2 KB of "token-token-…:" before
    they were rewritten; 50 KB of each shape must take well under a second (5 s allows a loaded machine)."""
    started = time.perf_counter()
    Redactor(["some-known-secret"]).text(hostile)
    assert time.perf_counter() - started < 5
