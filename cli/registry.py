"""`vitals provider|subject add|consent|token`: the registry."""

from __future__ import annotations

import argparse

from cli.output import Groups, commit_and_emit, csv_list, iso_time, say
from core.errors import InputError
from core.settings import Settings


def cmd_provider_add(args: argparse.Namespace, settings: Settings) -> int:
    from ingest import providers

    master = settings.require_secret_key()
    if settings.mqtt_admin_url is None:
        say("VITALS_MQTT_ADMIN_URL not set: no MQTT credentials created")
    return commit_and_emit(
        settings,
        lambda conn: providers.add_provider(
            conn,
            master,
            args.name,
            args.types,
            actor="cli",
            mqtt_admin_url=settings.mqtt_admin(),
        ),
    )


def cmd_provider_status(args: argparse.Namespace, settings: Settings) -> int:
    from ingest import providers

    return commit_and_emit(
        settings,
        lambda conn: providers.set_provider_status(
            conn,
            args.provider_id,
            args.status,
            actor="cli",
            mqtt_admin_url=settings.mqtt_admin(),
        ),
    )


def cmd_subject_add(args: argparse.Namespace, settings: Settings) -> int:
    from store import registry

    links = []
    for link in args.link or []:
        provider_id, sep, user_ref = link.partition(":")
        if not sep or not user_ref:
            raise InputError("invalid_link", f"--link wants PROVIDER_ID:USER_REF, not {link!r}")
        links.append((provider_id, user_ref))
    return commit_and_emit(
        settings, lambda conn: registry.add_subject(conn, args.residency, links, actor="cli")
    )


def cmd_consent_grant(args: argparse.Namespace, settings: Settings) -> int:
    from store import registry

    return commit_and_emit(
        settings,
        lambda conn: registry.grant_consent(
            conn,
            args.subject_id,
            args.purpose,
            actor="cli",
            provider_id=args.provider,
            types=args.types,
            valid_from=args.valid_from,
            valid_until=args.valid_until,
        ),
    )


def cmd_consent_withdraw(args: argparse.Namespace, settings: Settings) -> int:
    from store import registry

    return commit_and_emit(
        settings, lambda conn: registry.withdraw_consent(conn, args.consent_id, actor="cli")
    )


def cmd_token_create(args: argparse.Namespace, settings: Settings) -> int:
    from store import registry

    return commit_and_emit(
        settings,
        lambda conn: registry.create_token(
            conn, args.name, args.role, actor="cli", expires_in_days=args.expires_in
        ),
    )


def register(groups: Groups) -> None:
    provider = groups.group("provider", "approved providers")
    p = provider.add_parser("add", help="register an approved provider")
    p.add_argument("name")
    p.add_argument("--types", type=csv_list, required=True)
    p.set_defaults(func=cmd_provider_add)
    p = provider.add_parser(
        "status", help="activate, suspend or remove a provider (and its MQTT account)"
    )
    p.add_argument("provider_id")
    p.add_argument("status", choices=["active", "suspended", "removed"])
    p.set_defaults(func=cmd_provider_status)

    subject = groups.group("subject", "data subjects")
    p = subject.add_parser("add", help="add a subject")
    p.add_argument("--residency", required=True, choices=["FI", "EU"])
    p.add_argument("--link", action="extend", nargs="+", metavar="PROVIDER_ID:USER_REF")
    p.set_defaults(func=cmd_subject_add)
    consent = groups.group("consent", "consents")
    p = consent.add_parser("grant", help="record a consent")
    p.add_argument("subject_id")
    p.add_argument(
        "--purpose",
        required=True,
        choices=["collection", "location", "analytics", "research", "marketing"],
    )
    p.add_argument("--provider")
    p.add_argument("--types", type=csv_list)
    p.add_argument("--from", dest="valid_from", type=iso_time)
    p.add_argument("--until", dest="valid_until", type=iso_time)
    p.set_defaults(func=cmd_consent_grant)
    p = consent.add_parser("withdraw", help="withdraw a consent")
    p.add_argument("consent_id")
    p.set_defaults(func=cmd_consent_withdraw)

    token = groups.group("token", "API bearer tokens")
    p = token.add_parser("create", help="create a bearer token")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=["admin", "dpo", "analyst"])
    p.add_argument(
        "--expires-in",
        type=int,
        default=90,
        metavar="DAYS",
        help="days until the token stops working (1-365, default 90)",
    )
    p.set_defaults(func=cmd_token_create)
