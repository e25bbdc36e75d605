"""`vitals flows run|serve`: the Prefect flows."""

from __future__ import annotations

import argparse

from cli.output import Groups, emit, say
from core.settings import Settings


def cmd_flows_run(args: argparse.Namespace, settings: Settings) -> int:
    from flows.serve import run_flow

    result = run_flow(
        args.flow,
        settings,
        region=args.region,
        via_prefect=args.prefect or None,
        group=getattr(args, "group", None),
        partner=getattr(args, "partner", None),
        min_subjects=getattr(args, "min_subjects", 10),
        period=getattr(args, "period", "week"),
        epsilon=getattr(args, "epsilon", None),
    )
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
    flows = groups.group(
        "flows", "Prefect flows: groups, export, retention, purge, audience, disclosure, statistics"
    )
    run = flows.add_parser("run", help="run a flow now").add_subparsers(dest="flow", required=True)
    for name, help_ in (
        ("groups", "derive analytic user groups"),
        ("export", "write a pseudonymised Parquet export"),
        ("retention", "delete data past retention"),
        ("purge", "rewrite past exports as the purge queue says (as `vitals export purge`)"),
        ("audience", "a marketing audience from a derived group"),
        ("disclosure", "disclose readings to a partner"),
        ("statistics", "statistics in non-identifiable form"),
    ):
        p = run.add_parser(name, help=help_)
        if name in ("export", "statistics"):
            p.add_argument("--region", choices=["FI", "EU"], default="EU", help="destination")
        if name == "audience":
            p.add_argument("--group", required=True, help="a group of the current rule set")
            p.add_argument("--partner", help="for this partner (default: own marketing)")
        if name == "disclosure":
            p.add_argument("--partner", required=True)
        if name == "statistics":
            p.add_argument(
                "--min-subjects",
                type=int,
                default=10,
                help="cells from fewer distinct subjects are not published (default 10)",
            )
            p.add_argument("--period", choices=["day", "week", "month"], default="week")
            p.add_argument(
                "--epsilon",
                type=float,
                help="release n and mean through a differentially private mechanism",
            )
        p.add_argument("--prefect", action="store_true", help="run as a Prefect flow run")
        p.set_defaults(func=cmd_flows_run, region="EU")
    flows.add_parser("serve", help="the flows on schedules").set_defaults(func=cmd_flows_serve)
