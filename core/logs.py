"""Structured JSON logs, one object per line, without health values or identifiers.

Only allow-listed fields reach the output: counts, durations, status codes,
route templates (`/v1/subjects/{subject_id}`, never the id), provider ids
(organisations, not people) and reason codes. Anything else passed as
`extra=` is dropped, so a careless call site cannot leak a value or a person.

    log = logging.getLogger("vitals.http")
    log.info("webhook", extra={"provider_id": pid, "accepted": 3, "duration_ms": 4.2})
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

# Fields that may appear in a log line. Nothing here can hold a health value,
# a subject id, a provider's user reference, a token or a secret.
ALLOWED_FIELDS = frozenset(
    {
        "event",
        "method",
        "route",
        "status",
        "duration_ms",
        "provider_id",
        "items",
        "accepted",
        "duplicates",
        "rejected",
        "reasons",
        "transport",
        "batch",
        "requests",
        "role",
        "action",
        "error",
        "host",
        "port",
        "pending",
        "instance",
    }
)
_MAX_VALUE_CHARS = 200


def _clean(value: Any) -> Any:
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k)[:64]: _clean(v) for k, v in list(value.items())[:32]}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value[:32]]
    return str(value)[:_MAX_VALUE_CHARS]


def _message(record: logging.LogRecord) -> str:
    """Our own messages in full; another library's message template only, without
    its arguments (they can be a request line, a row or an exception message)."""
    if record.name == "vitals" or record.name.startswith("vitals."):
        return record.getMessage()
    return str(record.msg)


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...allowed extras}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _message(record)[:_MAX_VALUE_CHARS],
        }
        for key in ALLOWED_FIELDS.intersection(record.__dict__):
            line[key] = _clean(record.__dict__[key])
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type only: messages and tracebacks can quote payloads.
            line["exception"] = record.exc_info[0].__name__
        return orjson.dumps(line).decode()


def configure(level: int | str = logging.INFO, stream: Any = None) -> None:
    """Route every logger to one JSON handler on stderr.

    Call it after importing everything the process uses: importing Prefect runs
    its own `dictConfig`, which gives uvicorn's loggers a plain-text handler that
    prints whole tracebacks (exception messages included). Here every handler
    another library installed is removed and its loggers propagate to the root,
    which has the JSON handler only.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and logger.handlers:
            logger.handlers[:] = []
            logger.propagate = True
    for name in ("vitals", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    # Uvicorn's access log prints raw paths (which can hold subject ids): off.
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = False
    access.disabled = True
