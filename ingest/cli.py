"""`vitals` command line. JSON on stdout, messages on stderr.

Exit codes: 0 success, 1 refused input, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from core.errors import InputError, SettingsError, StorageError
from core.settings import Settings
from flows.common import quiet_prefect_env

Handler = Callable[[argparse.Namespace, Settings], int]


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


def _connect(settings: Settings) -> Any:
    from store.db import connect

    return connect(settings.require_database_url())


# Handlers ---------------------------------------------------------------------


def cmd_db_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from store.migrate import migrate

    applied = migrate(settings.require_database_url())
    say(f"applied {len(applied)} migration(s)" if applied else "database is up to date")
    emit({"applied": applied})
    return 0


def cmd_db_app_role(args: argparse.Namespace, settings: Settings) -> int:
    from store.migrate import APP_ROLE, enable_app_login

    if settings.app_database_password is None:
        raise SettingsError("VITALS_APP_DATABASE_PASSWORD is required")
    try:
        enable_app_login(
            settings.require_database_url(), settings.app_database_password.get_secret_value()
        )
    except ValueError as e:
        raise SettingsError(f"VITALS_APP_DATABASE_PASSWORD: {e}") from None
    say(f"role {APP_ROLE} may log in with VITALS_APP_DATABASE_PASSWORD")
    emit({"role": APP_ROLE, "login": True})
    return 0


def cmd_provider_add(args: argparse.Namespace, settings: Settings) -> int:
    from ingest import providers

    master = settings.require_secret_key()
    if settings.mqtt_admin_url is None:
        say("VITALS_MQTT_ADMIN_URL not set: no MQTT credentials created")
    with _connect(settings) as conn:
        result = providers.add_provider(
            conn,
            master,
            args.name,
            args.types,
            actor="cli",
            mqtt_admin_url=settings.mqtt_admin(),
        )
        conn.commit()
    emit(result)
    return 0


def cmd_provider_status(args: argparse.Namespace, settings: Settings) -> int:
    from ingest import providers

    with _connect(settings) as conn:
        result = providers.set_provider_status(
            conn,
            args.provider_id,
            args.status,
            actor="cli",
            mqtt_admin_url=settings.mqtt_admin(),
        )
        conn.commit()
    emit(result)
    return 0


def cmd_subject_add(args: argparse.Namespace, settings: Settings) -> int:
    from store import registry

    links = []
    for link in args.link or []:
        provider_id, sep, user_ref = link.partition(":")
        if not sep or not user_ref:
            raise InputError("invalid_link", f"--link wants PROVIDER_ID:USER_REF, not {link!r}")
        links.append((provider_id, user_ref))
    with _connect(settings) as conn:
        result = registry.add_subject(conn, args.residency, links, actor="cli")
        conn.commit()
    emit(result)
    return 0


def cmd_subject_export(args: argparse.Namespace, settings: Settings) -> int:
    from flows.rights import write_extract

    with _connect(settings) as conn:
        if args.out:
            with _private_output(args.out) as out:
                counts = write_extract(conn, args.subject_id, out, actor="cli")
            emit({"subject_id": args.subject_id, "out": args.out, **counts})
        else:
            write_extract(conn, args.subject_id, sys.stdout.buffer, actor="cli")
    return 0


def _private_output(path: str) -> Any:
    """Open for writing, mode 0600 (also when the file exists): an extract holds
    everything about a person."""
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def cmd_subject_erase(args: argparse.Namespace, settings: Settings) -> int:
    from flows.rights import erase_subject

    master = settings.require_secret_key()
    emit(erase_subject(settings.require_database_url(), master, args.subject_id, actor="cli"))
    return 0


def cmd_export_purge(args: argparse.Namespace, settings: Settings) -> int:
    from flows.purge import purge_exports

    master = settings.require_secret_key()
    result = purge_exports(settings.require_database_url(), master, actor="cli")
    emit(result)
    for failed in result["failed"]:
        say(f"purge failed for export {failed['export_id']}: {failed['error']}")
    return 1 if result["failed"] else 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.demo import main as demo

    return demo(settings)


def cmd_consent_grant(args: argparse.Namespace, settings: Settings) -> int:
    from store import registry

    with _connect(settings) as conn:
        result = registry.grant_consent(
            conn,
            args.subject_id,
            args.purpose,
            actor="cli",
            provider_id=args.provider,
            types=args.types,
            valid_from=args.valid_from,
            valid_until=args.valid_until,
        )
        conn.commit()
    emit(result)
    return 0


def cmd_consent_withdraw(args: argparse.Namespace, settings: Settings) -> int:
    from store import registry

    with _connect(settings) as conn:
        result = registry.withdraw_consent(conn, args.consent_id, actor="cli")
        conn.commit()
    emit(result)
    return 0


def cmd_objection_add(args: argparse.Namespace, settings: Settings) -> int:
    from store import objections

    master = settings.require_secret_key()
    with _connect(settings) as conn:
        result = objections.add_objection(
            conn, master, args.subject_id, args.purpose, actor="cli", partner_id=args.partner
        )
        conn.commit()
    emit(result)
    return 0


def cmd_objection_lift(args: argparse.Namespace, settings: Settings) -> int:
    from store import objections

    with _connect(settings) as conn:
        result = objections.lift_objection(conn, args.objection_id, actor="cli")
        conn.commit()
    emit(result)
    return 0


def cmd_partner_add(args: argparse.Namespace, settings: Settings) -> int:
    from store import partners

    with _connect(settings) as conn:
        result = partners.add_partner(
            conn, args.name, args.region, args.purposes, args.types, actor="cli"
        )
        conn.commit()
    emit(result)
    return 0


def cmd_partner_list(args: argparse.Namespace, settings: Settings) -> int:
    from store import partners

    with _connect(settings) as conn:
        result = partners.list_partners(conn, actor="cli")
        conn.commit()
    emit(result)
    return 0


def cmd_partner_notices(args: argparse.Namespace, settings: Settings) -> int:
    from store import partners

    with _connect(settings) as conn:
        result = partners.notices(conn, args.partner_id, actor="cli")
        conn.commit()
    emit(result)
    return 0


def cmd_token_create(args: argparse.Namespace, settings: Settings) -> int:
    from store import registry

    with _connect(settings) as conn:
        result = registry.create_token(
            conn, args.name, args.role, actor="cli", expires_in_days=args.expires_in
        )
        conn.commit()
    emit(result)
    return 0


def _read_points(source: str) -> Iterator[object]:
    """One data point, an array, or JSON lines; a broken line yields None."""
    data = sys.stdin.buffer.read() if source == "-" else open(source, "rb").read()  # noqa: SIM115
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        for line in data.splitlines():
            if line.strip():
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    yield None
        return
    if isinstance(doc, list):
        yield from doc
    else:
        yield doc


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.omh import parse_data_point
    from schemas.reading import INVALID_SCHEMA, Refusal

    now = datetime.now(UTC)
    invalid = 0
    try:
        points = list(_read_points(args.file))
    except OSError as e:
        raise InputError("unreadable", f"cannot read {args.file}: {e.strerror}") from None
    for point in points:
        parsed = (
            Refusal(None, INVALID_SCHEMA, "not valid JSON")
            if point is None
            else parse_data_point(point, now=now)
        )
        if isinstance(parsed, Refusal):
            invalid += 1
            emit(
                {
                    "id": parsed.id,
                    "status": "invalid",
                    "reason": parsed.reason,
                    "detail": parsed.detail,
                }
            )
        else:
            emit({"id": parsed.id, "status": "valid", "reason": None, "detail": None})
    if invalid:
        say(f"{invalid} of {len(points)} data point(s) invalid")
    return 1 if invalid else 0


def cmd_broker_init(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from ingest.broker import BrokerError, broker_init, parse_mqtt_url

    passwords: dict[str, str | None] = {"admin_password": None, "ingester_password": None}
    if args.passwords_from_env:
        # Compose: the accounts' passwords come from the URLs the services use.
        for key, url in (
            ("admin_password", settings.mqtt_admin_url),
            ("ingester_password", settings.mqtt_url),
        ):
            if url is None:
                raise SettingsError(
                    "--passwords-from-env needs VITALS_MQTT_URL and VITALS_MQTT_ADMIN_URL"
                )
            passwords[key] = parse_mqtt_url(url.get_secret_value())[3]
    try:
        result = broker_init(
            Path(args.dir),
            port=args.port,
            host=args.host,
            force=args.force,
            reapply=args.reapply,
            user=args.user,
            plugin=Path(args.plugin) if args.plugin else None,
            tls_cert=Path(args.tls_cert) if args.tls_cert else None,
            tls_key=Path(args.tls_key) if args.tls_key else None,
            tls_port=args.tls_port,
            **passwords,
        )
    except (BrokerError, ValueError) as e:
        raise InputError("broker_init", str(e)) from None
    emit(result)
    return 0


def cmd_mqtt(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.mqtt import serve

    return serve(
        settings,
        instance=args.instance,
        metrics_port=args.metrics_port,
        receive_maximum=args.receive_maximum,
        max_inflight_bytes=args.max_inflight_bytes,
        session_expiry=args.session_expiry,
    )


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from ingest.http import serve

    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise SettingsError("--ssl-certfile and --ssl-keyfile go together")
    for option, path in (
        ("--ssl-certfile", args.ssl_certfile),
        ("--ssl-keyfile", args.ssl_keyfile),
    ):
        if path and not Path(path).is_file():
            raise SettingsError(f"{option}: no such file {path}")
    if args.admin_port is not None and args.admin_port == args.port:
        raise SettingsError("--admin-port must differ from --port")
    serve(
        settings,
        host=args.host,
        port=args.port,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        admin_host=args.admin_host,
        admin_port=args.admin_port,
    )
    return 0


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


# Parser -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitals", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database").add_subparsers(dest="db_command", required=True)
    db.add_parser("migrate", help="apply sql/ migrations").set_defaults(func=cmd_db_migrate)
    db.add_parser(
        "app-role",
        help="let the application role vitals_app log in with VITALS_APP_DATABASE_PASSWORD",
    ).set_defaults(func=cmd_db_app_role)

    broker = sub.add_parser("broker", help="Mosquitto set-up").add_subparsers(
        dest="broker_command", required=True
    )
    p = broker.add_parser("init", help="write a Mosquitto config with dynamic security")
    p.add_argument("dir")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--host", default="127.0.0.1", help="listener address")
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite (issues new passwords, drops provider accounts)",
    )
    p.add_argument(
        "--reapply",
        action="store_true",
        help="with the broker stopped: rewrite the config of an existing DIR, keep its "
        "accounts, bind old provider accounts to their client id, clear retained messages",
    )
    p.add_argument("--user", help="OS account a root-started broker runs as")
    p.add_argument("--plugin", help="path of mosquitto_dynamic_security.so")
    p.add_argument(
        "--passwords-from-env",
        action="store_true",
        help="take the account passwords from VITALS_MQTT_URL/_ADMIN_URL",
    )
    p.add_argument("--tls-cert", help="PEM certificate (chain): add a TLS listener")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert (readable by --user)")
    p.add_argument("--tls-port", type=int, default=8883, help="port of the TLS listener")
    p.set_defaults(func=cmd_broker_init)

    p = sub.add_parser("mqtt", help="the MQTT ingester (SIGTERM drains, commits, acknowledges)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    p.add_argument(
        "--instance",
        help="ingester instance id, one persistent session each; `auto`: the lowest free "
        "number locked in VITALS_MQTT_INSTANCE_DIR (default: VITALS_MQTT_INSTANCE or 0)",
    )
    p.add_argument(
        "--session-expiry",
        type=int,
        help="seconds the broker keeps this instance's session (and its share of "
        "messages) while it is away (default: VITALS_MQTT_SESSION_EXPIRY or 300)",
    )
    p.add_argument(
        "--max-inflight-bytes",
        type=int,
        help="payload bytes held unacknowledged before the ingester stops reading "
        "(default: VITALS_MQTT_MAX_INFLIGHT_BYTES or 64 MiB)",
    )
    p.add_argument(
        "--receive-maximum",
        type=int,
        default=1000,
        help="unacknowledged messages the broker may send at once (bounds memory)",
    )
    p.set_defaults(func=cmd_mqtt)

    provider = sub.add_parser("provider", help="approved providers").add_subparsers(
        dest="provider_command", required=True
    )
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

    subject = sub.add_parser("subject", help="data subjects").add_subparsers(
        dest="subject_command", required=True
    )
    p = subject.add_parser("add", help="add a subject")
    p.add_argument("--residency", required=True, choices=["FI", "EU"])
    p.add_argument("--link", action="extend", nargs="+", metavar="PROVIDER_ID:USER_REF")
    p.set_defaults(func=cmd_subject_add)
    p = subject.add_parser("export", help="machine-readable extract of a subject's data")
    p.add_argument("subject_id")
    p.add_argument("--out", help="write the JSON document here (default: stdout)")
    p.set_defaults(func=cmd_subject_export)
    p = subject.add_parser("erase", help="erase a subject everywhere (resumable)")
    p.add_argument("subject_id")
    p.set_defaults(func=cmd_subject_erase)

    consent = sub.add_parser("consent", help="consents").add_subparsers(
        dest="consent_command", required=True
    )
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

    objection = sub.add_parser("objection", help="objections (a person's prohibitions)")
    objection_sub = objection.add_subparsers(dest="objection_command", required=True)
    p = objection_sub.add_parser("add", help="record an objection (beats every consent of it)")
    p.add_argument("subject_id")
    p.add_argument("--purpose", required=True, choices=["marketing", "research", "disclosure"])
    p.add_argument("--partner", help="disclosure to this partner only (default: every partner)")
    p.set_defaults(func=cmd_objection_add)
    p = objection_sub.add_parser("lift", help="lift an objection")
    p.add_argument("objection_id")
    p.set_defaults(func=cmd_objection_lift)

    partner = sub.add_parser("partner", help="partners (audiences, disclosures)")
    partner_sub = partner.add_subparsers(dest="partner_command", required=True)
    p = partner_sub.add_parser("add", help="register a partner")
    p.add_argument("name")
    p.add_argument("--region", required=True, choices=["EU", "FI"])
    p.add_argument("--purposes", type=csv_list, required=True, help="marketing and/or disclosure")
    p.add_argument("--types", type=csv_list, help="data types agreed for disclosure")
    p.set_defaults(func=cmd_partner_add)
    partner_sub.add_parser("list", help="list partners").set_defaults(func=cmd_partner_list)
    p = partner_sub.add_parser(
        "notices", help="erasures and objections owed to a partner (GDPR Art. 19)"
    )
    p.add_argument("partner_id")
    p.set_defaults(func=cmd_partner_notices)

    token = sub.add_parser("token", help="API bearer tokens").add_subparsers(
        dest="token_command", required=True
    )
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

    p = sub.add_parser("serve", help="the HTTP API (webhooks, admin, health, metrics)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--ssl-certfile", help="PEM certificate (chain): serve HTTPS only")
    p.add_argument("--ssl-keyfile", help="PEM private key of --ssl-certfile")
    p.add_argument(
        "--admin-port",
        type=int,
        help="serve the admin API, /docs and /metrics only on this port; --port then "
        "serves the webhook, /healthz and /readyz only",
    )
    p.add_argument("--admin-host", default="127.0.0.1", help="address of --admin-port")
    p.set_defaults(func=cmd_serve)

    flows = sub.add_parser(
        "flows",
        help="Prefect flows: groups, export, retention, purge, audience, disclosure, statistics",
    ).add_subparsers(dest="flows_command", required=True)
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

    export = sub.add_parser("export", help="past exports").add_subparsers(
        dest="export_command", required=True
    )
    p = export.add_parser("purge", help="rewrite exports without erased/withdrawn subjects")
    p.set_defaults(func=cmd_export_purge)

    p = sub.add_parser("demo", help="the whole pipeline on embedded defaults")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("validate", help="check data points without storing")
    p.add_argument("file", nargs="?", default="-")
    p.set_defaults(func=cmd_validate)

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


if __name__ == "__main__":
    sys.exit(main())
