"""Flags that fall back to environment variables, so every setting works both ways.

``add_flag(parser, "--database-url", ...)`` reads ``EXEC_WATCHDOG_DATABASE_URL`` when the flag is
absent, and says so in ``--help``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def env_name(flag: str) -> str:
    return "EXEC_WATCHDOG_" + flag.lstrip("-").replace("-", "_").upper()


def add_flag(parser: argparse.ArgumentParser, flag: str, *, help: str, default: Any = None,
             **kwargs: Any) -> None:
    env = env_name(flag)
    value = os.environ.get(env)
    if value is not None and kwargs.get("action") in ("store_true", "store_false"):
        word = value.strip().lower()
        if word not in _YES + _NO:  # a typo must not silently mean "off" (EXEC_WATCHDOG_SHADOW=ture would act live)
            raise ConfigError(f"{env}={value[:40]!r} is not a yes/no value: use 1, true, yes, on or 0, false, no, off")
        default = word in _YES
    elif value is not None and kwargs.get("action") == "append":
        default = [v.strip() for v in value.split(",") if v.strip()]  # a list in one variable: comma-separated
    elif value is not None:
        default = value
    shown = "" if default in (None, "") or "secret" in flag or "token" in flag else f" (default: {default})"
    parser.add_argument(flag, default=default, help=f"{help}{shown} [env {env}]", **kwargs)


class ConfigError(ValueError):
    """A setting that cannot work; the message says what to fix."""


_YES = ("1", "true", "yes", "on")
_NO = ("0", "false", "no", "off", "")


def read_secret_file(path: str, flag: str) -> str:
    """The stripped content of a secret file, or a ConfigError naming the flag and the fix."""
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{flag} {path!r} cannot be read: {exc.strerror}") from None
    if not value:
        raise ConfigError(f"{flag} {path!r} is empty: put the secret in it")
    return value
