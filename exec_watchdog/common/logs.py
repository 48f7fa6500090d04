"""structlog configured once: one JSON object per line on stderr, or a readable console form."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from exec_watchdog.common.redaction import redact

_OURS = frozenset({"level", "timestamp", "logger"})  # written by the processors: nothing to redact


def redact_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Blank credentials out of every text of a line, ours or a library's (uvicorn logs WebSocket
    paths with their ``?access_token=``; the websockets library dumps handshake headers at debug;
    an agent's error text may carry its environment): ``common/redaction.py`` has the rules."""
    for key, value in event_dict.items():
        if key in _OURS:
            continue
        if isinstance(value, str):
            event_dict[key] = redact(value)
        elif isinstance(value, list | tuple) and any(isinstance(v, str) for v in value):
            event_dict[key] = [redact(v) if isinstance(v, str) else v for v in value]
    return event_dict


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured: a caller
    that swaps stderr (a test capturing it, then closing it) never leaves the logs on a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_CURRENT_STDERR: Any = _CurrentStderr()


def configure_logging(level: str = "info", fmt: str = "json", stream: Any = None) -> None:
    """Route structlog (and the stdlib loggers of uvicorn and friends) to stderr, or to ``stream``.

    ``fmt`` is ``json`` (one object per line, for machines) or ``console`` (for people).
    """
    out = _CURRENT_STDERR if stream is None else stream
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}: use debug, info, warning or error")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(  # redacted last: a traceback quotes what the exception said
        processors=[*shared, structlog.processors.format_exc_info, redact_secrets, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=[*shared, redact_secrets], processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer,
        ])
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # httpx writes one INFO line per request: two per orphan in a mass orphaning, most of the
    # remediator's logging CPU (bench/remediator.md). Callers log the failures that matter; at
    # debug the request lines are still there.
    logging.getLogger("httpx").setLevel(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
