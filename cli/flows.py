"""`vitals flows run|serve`: the Prefect flows."""

from __future__ import annotations

import argparse

from cli.output import Groups, emit, say
from core.settings import Settings


def cmd_flows_run(args: argparse.Namespace, settings: Settings) -> int:
    from flows.serve import run_flow

    result = run_flow(args.flow, settings, region=args.region, via_prefect=args.prefect or None)
    emit(result)
    if args.flow == "purge" and result.get("failed"):
        say(f"purge failed for {len(result['failed'])} export(s); they stay queued")
        return 1
    return 0


def cmd_flows_serve(args: argparse.Namespace, settings: Settings) -> int:
    from flows.serve import serve

    serve(settings)
    return 0


def register(groups: Groups) -> None:
    flows = groups.group("flows", "Prefect flows: groups, export, retention, purge")
    run = flows.add_parser("run", help="run a flow now").add_subparsers(dest="flow", required=True)
    for name, help_ in (
        ("groups", "derive analytic user groups"),
        ("export", "write a pseudonymised Parquet export"),
        ("retention", "delete data past retention"),
        ("purge", "rewrite past exports as the purge queue says (as `vitals export purge`)"),
    ):
        p = run.add_parser(name, help=help_)
        if name == "export":
            p.add_argument("--region", choices=["FI", "EU"], default="EU", help="destination")
        p.add_argument("--prefect", action="store_true", help="run as a Prefect flow run")
        p.set_defaults(func=cmd_flows_run, region="EU")
    flows.add_parser("serve", help="the flows on schedules").set_defaults(func=cmd_flows_serve)
