"""`vitals` command line: the face of the project. JSON on stdout, messages on stderr.

Exit codes: 0 success, 1 refused input, 2 usage or configuration error.

One module per noun adds its commands (`register`) and handlers; a handler
takes the parsed arguments and the Settings and returns the exit code. The
CLI may import everything; nothing imports it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from cli import admin, flows, purposes, registry, rights, transports
from cli.output import Groups, say
from core.errors import InputError, SettingsError, StorageError
from core.settings import Settings
from flows.common import quiet_prefect_env


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitals",
        description="vitals: consent-gated health telemetry. JSON on stdout, messages on "
        "stderr; exit 0 success, 1 refused input, 2 usage or configuration error.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    groups = Groups(sub)
    admin.register(sub, groups)
    transports.register(sub, groups)
    registry.register(groups)
    rights.register(groups)
    purposes.register(groups)
    flows.register(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    quiet_prefect_env()  # before anything imports prefect (flows/common.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings()
        return int(args.func(args, settings))
    except InputError as e:
        say(f"refused ({e.code}): {e}")
        return 1
    except SettingsError as e:
        say(f"configuration error: {e}")
        return 2
    except StorageError as e:
        say(f"storage error: {e}")
        return 1
    except KeyboardInterrupt:
        return 130
