"""`vitals objection add|lift` and `vitals partner add|list|notices`: the
person's prohibitions and the partners data may go to (CONTRACT v2)."""

from __future__ import annotations

import argparse

from cli.output import Groups, commit_and_emit, csv_list
from core.settings import Settings


def cmd_objection_add(args: argparse.Namespace, settings: Settings) -> int:
    from store import objections

    master = settings.require_secret_key()
    return commit_and_emit(
        settings,
        lambda conn: objections.add_objection(
            conn, master, args.subject_id, args.purpose, actor="cli", partner_id=args.partner
        ),
    )


def cmd_objection_lift(args: argparse.Namespace, settings: Settings) -> int:
    from store import objections

    return commit_and_emit(
        settings, lambda conn: objections.lift_objection(conn, args.objection_id, actor="cli")
    )


def cmd_partner_add(args: argparse.Namespace, settings: Settings) -> int:
    from store import partners

    return commit_and_emit(
        settings,
        lambda conn: partners.add_partner(
            conn, args.name, args.region, args.purposes, args.types, actor="cli"
        ),
    )


def cmd_partner_list(args: argparse.Namespace, settings: Settings) -> int:
    from store import partners

    return commit_and_emit(settings, lambda conn: partners.list_partners(conn, actor="cli"))


def cmd_partner_notices(args: argparse.Namespace, settings: Settings) -> int:
    from store import partners

    return commit_and_emit(
        settings, lambda conn: partners.notices(conn, args.partner_id, actor="cli")
    )


def register(groups: Groups) -> None:
    objection = groups.group("objection", "objections (a person's prohibitions)")
    p = objection.add_parser("add", help="record an objection (beats every consent of it)")
    p.add_argument("subject_id")
    p.add_argument("--purpose", required=True, choices=["marketing", "research", "disclosure"])
    p.add_argument("--partner", help="disclosure to this partner only (default: every partner)")
    p.set_defaults(func=cmd_objection_add)
    p = objection.add_parser("lift", help="lift an objection")
    p.add_argument("objection_id")
    p.set_defaults(func=cmd_objection_lift)

    partner = groups.group("partner", "partners (audiences, disclosures)")
    p = partner.add_parser("add", help="register a partner")
    p.add_argument("name")
    p.add_argument("--region", required=True, choices=["EU", "FI"])
    p.add_argument("--purposes", type=csv_list, required=True, help="marketing and/or disclosure")
    p.add_argument("--types", type=csv_list, help="data types agreed for disclosure")
    p.set_defaults(func=cmd_partner_add)
    partner.add_parser("list", help="list partners").set_defaults(func=cmd_partner_list)
    p = partner.add_parser(
        "notices", help="erasures and objections owed to a partner (GDPR Art. 19)"
    )
    p.add_argument("partner_id")
    p.set_defaults(func=cmd_partner_notices)
