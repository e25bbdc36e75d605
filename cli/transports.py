"""`vitals serve|mqtt|broker init|validate`: the transports and the gate."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import orjson

from cli.output import Groups, emit, say
from core.errors import InputError, SettingsError
from core.settings import Settings


def _read_payloads(source: str) -> list[object]:
    """The whole input as one payload (a data point or an array), else each
    non-blank line as one (JSON lines; a broken line stays raw bytes, which
    the gate reports as not valid JSON)."""
    data = sys.stdin.buffer.read() if source == "-" else open(source, "rb").read()  # noqa: SIM115
    try:
        return [orjson.loads(data)]
    except orjson.JSONDecodeError:
        return [line for line in data.splitlines() if line.strip()]


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.gate import Gate

    gate = Gate(None, "cli")  # validate only: parse, never write
    now = datetime.now(UTC)
    try:
        payloads = _read_payloads(args.file)
    except OSError as e:
        raise InputError("unreadable", f"cannot read {args.file}: {e.strerror}") from None
    points = invalid = 0
    for payload in payloads:
        for verdict in gate.validate(payload, now=now):
            emit(verdict.as_dict())
            points += 1
            invalid += verdict.status == "invalid"
    if invalid:
        say(f"{invalid} of {points} data point(s) invalid")
    return 1 if invalid else 0


def cmd_broker_init(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from ingest.broker.config import BrokerError, broker_init, parse_mqtt_url

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
    from ingest.mqtt.process import serve

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

    from ingest.http.server import serve

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
    workers = settings.http_workers if args.workers is None else args.workers
    if not 1 <= workers <= 64:
        raise SettingsError("--workers must be between 1 and 64")
    serve(
        settings,
        host=args.host,
        port=args.port,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        admin_host=args.admin_host,
        admin_port=args.admin_port,
        workers=workers,
    )
    return 0


def register(sub: argparse._SubParsersAction, groups: Groups) -> None:
    broker = groups.group("broker", "Mosquitto set-up")
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
    p.add_argument(
        "--workers",
        type=int,
        help="worker processes sharing the listeners (default VITALS_HTTP_WORKERS, else 1)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("validate", help="check data points without storing")
    p.add_argument("file", nargs="?", default="-")
    p.set_defaults(func=cmd_validate)
