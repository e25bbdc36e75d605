"""What every `vitals` command shares: JSON on stdout, messages on stderr,
argument types, and a database connection for one command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import datetime
from typing import IO, Any

import orjson

from core.settings import Settings
from store.db import Connection

Handler = Callable[[argparse.Namespace, Settings], int]


class Groups:
    """The `vitals <group> <command>` sub-parsers, each created once, so
    several modules can add commands to one group (e.g. `subject`)."""

    def __init__(self, sub: Any) -> None:
        self.sub = sub
        self._groups: dict[str, Any] = {}

    def group(self, name: str, help_: str) -> Any:
        if name not in self._groups:
            self._groups[name] = self.sub.add_parser(name, help=help_).add_subparsers(
                dest=f"{name}_command", required=True
            )
        return self._groups[name]


def emit(data: Any) -> None:
    sys.stdout.buffer.write(
        orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS) + b"\n"
    )
    sys.stdout.flush()


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def iso_time(value: str) -> datetime:
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    if t.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} needs a UTC offset, e.g. 2026-01-01T00:00Z")
    return t


def csv_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def connect(settings: Settings) -> Connection:
    """One connection for one command; the command commits."""
    from store.db import connect as store_connect

    return store_connect(settings.require_database_url())


def commit_and_emit(settings: Settings, work: Callable[[Connection], Any]) -> int:
    """The shape of every registry command: `work` on one connection, commit,
    print its result as JSON, exit 0."""
    with connect(settings) as conn:
        result = work(conn)
        conn.commit()
    emit(result)
    return 0


def private_output(path: str) -> IO[bytes]:
    """Open for writing, mode 0600 (also when the file exists): an extract holds
    everything about a person."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")
