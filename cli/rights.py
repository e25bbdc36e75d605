"""`vitals subject export|erase` and `vitals export purge`: the data subject's rights."""

from __future__ import annotations

import argparse
import sys

from cli.output import Groups, connect, emit, private_output, say
from core.settings import Settings


def cmd_subject_export(args: argparse.Namespace, settings: Settings) -> int:
    if args.format == "fhir":
        from rights.fhir import write_fhir_extract as write_extract
    else:
        from rights.extract import write_extract

    with connect(settings) as conn:
        if args.out:
            with private_output(args.out) as out:
                counts = write_extract(conn, args.subject_id, out, actor="cli")
            emit({"subject_id": args.subject_id, "out": args.out, **counts})
        else:
            write_extract(conn, args.subject_id, sys.stdout.buffer, actor="cli")
    return 0


def cmd_subject_erase(args: argparse.Namespace, settings: Settings) -> int:
    from rights.erasure import erase_subject

    master = settings.require_secret_key()
    emit(erase_subject(settings.require_database_url(), master, args.subject_id, actor="cli"))
    return 0


def cmd_export_purge(args: argparse.Namespace, settings: Settings) -> int:
    from rights.purge import purge_exports

    master = settings.require_secret_key()
    result = purge_exports(settings.require_database_url(), master, actor="cli")
    emit(result)
    for failed in result["failed"]:
        say(f"purge failed for export {failed['export_id']}: {failed['error']}")
    return 1 if result["failed"] else 0


def register(groups: Groups) -> None:
    subject = groups.group("subject", "data subjects")
    p = subject.add_parser("export", help="machine-readable extract of a subject's data")
    p.add_argument("subject_id")
    p.add_argument("--out", help="write the JSON document here (default: stdout)")
    p.add_argument(
        "--format",
        choices=("json", "fhir"),
        default="json",
        help="json (default): the vitals extract; fhir: a FHIR R4 Bundle (type collection)",
    )
    p.set_defaults(func=cmd_subject_export)
    p = subject.add_parser("erase", help="erase a subject everywhere (resumable)")
    p.add_argument("subject_id")
    p.set_defaults(func=cmd_subject_erase)

    export = groups.group("export", "past exports")
    p = export.add_parser("purge", help="rewrite exports without erased/withdrawn subjects")
    p.set_defaults(func=cmd_export_purge)
