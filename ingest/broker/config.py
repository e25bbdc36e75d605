"""Mosquitto broker set-up: URLs, the config files and the two fixed accounts.

`broker_init` writes a Mosquitto 2.x configuration that uses the
dynamic-security plugin, with two accounts: an admin (may only use the
dynamic-security control topic) and the ingester. Provider accounts are
managed at run time by `ingest.broker.accounts`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import secrets
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from ingest.broker.store import StoreFormatError, clear_retained

ADMIN_USERNAME = "admin"
INGESTER_USERNAME = "vitals-ingester"
SHARE_GROUP = "vitals"
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"

CONFIG_NAME = "mosquitto.conf"
DYNSEC_NAME = "dynamic-security.json"
DATA_DIR_NAME = "data"
PERSISTENCE_FILE = "mosquitto.db"
PROVIDER_PREFIX = "provider-"

# Mosquitto 2.0 dynsec: PBKDF2-HMAC-SHA512, 12-byte salt, 64-byte hash.
_SALT_BYTES = 12
_HASH_BYTES = 64
_PBKDF2_ITERATIONS = 101  # what the broker itself uses for clients it creates

_PLUGIN_NAME = "mosquitto_dynamic_security.so"
_PLUGIN_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/usr/local/lib64",
    "/opt/homebrew/lib",
    "/usr/local/opt/mosquitto/lib",
)


DEFAULT_TIMEOUT = 10.0


class BrokerError(Exception):
    """A broker set-up or dynamic-security operation failed."""


class BrokerConfigExists(BrokerError):
    """broker_init found files it would overwrite."""


# --------------------------------------------------------------------------- urls


def parse_mqtt_url(url: str) -> tuple[str, int, str | None, str | None]:
    """Split `mqtt://user:pass@host:port` into (host, port, username, password).

    User and password are percent-decoded; the port defaults to 1883.
    """
    parts = urlsplit(url)
    if parts.scheme != "mqtt":
        raise ValueError(f"unsupported MQTT URL scheme {parts.scheme!r}: expected mqtt://")
    if not parts.hostname:
        raise ValueError("MQTT URL has no host")
    try:
        port = parts.port or 1883
    except ValueError as exc:
        raise ValueError(f"MQTT URL has an invalid port: {exc}") from None
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return parts.hostname, port, username, password


def _mqtt_url(username: str, password: str, host: str, port: int) -> str:
    netloc_host = f"[{host}]" if ":" in host else host
    return f"mqtt://{quote(username, safe='')}:{quote(password, safe='')}@{netloc_host}:{port}"


# ------------------------------------------------------------------ broker_init


def find_dynsec_plugin() -> Path:
    """Locate mosquitto_dynamic_security.so on this machine."""
    candidates: list[Path] = []
    mosquitto = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if mosquitto:
        prefix = Path(mosquitto).resolve().parent.parent
        candidates += [prefix / "lib" / _PLUGIN_NAME, prefix / "lib64" / _PLUGIN_NAME]
    candidates += [Path(d) / _PLUGIN_NAME for d in _PLUGIN_DIRS]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    for root in ("/usr/lib", "/usr/local/lib"):
        for found in sorted(Path(root).glob(f"*/{_PLUGIN_NAME}")):
            return found
    raise BrokerError(
        f"{_PLUGIN_NAME} not found next to mosquitto or in {', '.join(_PLUGIN_DIRS)}: "
        "install Mosquitto >= 2.0 (Debian/Ubuntu package `mosquitto`)"
    )


def _hash_password(password: str) -> dict[str, Any]:
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac(
        "sha512", password.encode(), salt, _PBKDF2_ITERATIONS, dklen=_HASH_BYTES
    )
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": _PBKDF2_ITERATIONS,
    }


def acl(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "priority": 0, "allow": True}


def _dynsec_document(admin_password: str, ingester_password: str) -> dict[str, Any]:
    control = "$CONTROL/dynamic-security/#"
    readings = "vitals/v1/+/readings"
    return {
        # Anything not granted by a role is denied.
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": [
            {
                "username": ADMIN_USERNAME,
                "textname": "vitals broker administrator (dynamic security only)",
                "roles": [{"rolename": "admin"}],
                **_hash_password(admin_password),
            },
            {
                "username": INGESTER_USERNAME,
                "textname": "vitals MQTT ingester",
                "roles": [{"rolename": "vitals-ingester"}],
                **_hash_password(ingester_password),
            },
        ],
        "groups": [],
        "roles": [
            {
                "rolename": "admin",
                "textdescription": "manage clients and roles through dynamic security",
                "acls": [
                    acl("publishClientSend", control),
                    acl("publishClientReceive", control),
                    acl("subscribePattern", control),
                ],
            },
            {
                "rolename": "vitals-ingester",
                "textdescription": "read every provider's readings, publish rejections",
                "acls": [
                    acl("subscribePattern", f"$share/{SHARE_GROUP}/{readings}"),
                    acl("subscribePattern", readings),
                    acl("publishClientReceive", readings),
                    acl("publishClientSend", "vitals/v1/+/rejections"),
                ],
            },
        ],
    }


def _config_text(directory: Path, host: str, port: int, user: str, plugin: Path) -> str:
    return f"""\
# Mosquitto configuration for vitals, written by `vitals broker init`.
# Run with: mosquitto -c {directory / CONFIG_NAME}
per_listener_settings false
allow_anonymous false
# Account the broker runs as when started by root (no effect otherwise).
user {user}

listener {port} {host}

plugin {plugin}
plugin_opt_config_file {directory / DYNSEC_NAME}

# No retained messages: a device's reading must never wait in the broker for
# whoever subscribes next (outside consent and erasure). MQTT 5 clients that
# publish with the retain flag are disconnected with reason 0x9A.
retain_available false

# Queued QoS 1 messages of persistent sessions survive restarts.
persistence true
persistence_location {directory / DATA_DIR_NAME}/
persistence_file {PERSISTENCE_FILE}
autosave_interval 10
autosave_on_changes false
# Sessions that never set an expiry (MQTT 3.1.1 clean_session=false) end after
# one hour offline, with what is queued for them; MQTT 5 clients choose their
# own session expiry (the ingester asks for minutes: `vitals mqtt --session-expiry`).
persistent_client_expiration 1h

# Never drop a queued QoS 1 message because of a queue limit (0 = unlimited).
max_queued_messages 0
max_queued_bytes 0
# MQTT 3.1.1 in-flight window; MQTT 5 clients set their own Receive Maximum.
max_inflight_messages 100
max_inflight_bytes 0
queue_qos0_messages false
# Messages larger than 256 KiB are refused (the whole PUBLISH packet: topic,
# properties and payload). MQTT 5 clients learn the limit from the CONNACK;
# a client that sends a larger packet is disconnected (0x95).
max_packet_size 262144

log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
log_timestamp_format %Y-%m-%dT%H:%M:%S
connection_messages true
"""


def _tls_listener_text(host: str, port: int, cert: Path, key: Path) -> str:
    """A second listener that speaks TLS only, beside the plain one (which then
    need not be reachable from outside: compose publishes only this one)."""
    return f"""
# TLS listener for devices and partners (vitals broker init --tls-cert/--tls-key).
# Must come after every global option: the lines below belong to this listener.
listener {port} {host}
certfile {cert}
keyfile {key}
tls_version tlsv1.2
"""


def _write_file(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _bind_provider_client_ids(document: dict[str, Any]) -> int:
    """Bind every provider account that has no client id to its username (see
    ingest.broker.accounts); returns how many were bound."""
    bound = 0
    for client in document.get("clients", []):
        username = client.get("username", "")
        if username.startswith(PROVIDER_PREFIX) and not client.get("clientid"):
            client["clientid"] = username
            bound += 1
    return bound


def _set_password(document: dict[str, Any], username: str, password: str | None) -> None:
    if password is None:
        return
    for client in document.get("clients", []):
        if client.get("username") == username:
            client.update(_hash_password(password))
            return
    raise BrokerError(f"{DYNSEC_NAME} has no account {username!r}")


def broker_init(
    directory: Path,
    port: int = 1883,
    host: str = "127.0.0.1",
    *,
    force: bool = False,
    reapply: bool = False,
    user: str | None = None,
    plugin: Path | None = None,
    admin_password: str | None = None,
    ingester_password: str | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    tls_port: int = 8883,
) -> dict[str, Any]:
    """Write a dynamic-security Mosquitto config with an admin and an ingester account.

    Returns `{"config", "mqtt_url", "mqtt_admin_url", "retained_cleared"}`.
    Refuses (BrokerConfigExists) when DIR already holds a config or
    dynamic-security file, unless `force` (which issues new passwords and drops
    every provider account; restart the broker afterwards) or `reapply`.

    `reapply` brings an existing directory up to this version's settings while
    the broker is stopped: it rewrites the config, keeps the accounts (binding
    provider accounts made before client ids were bound to their username;
    the admin and ingester passwords change only when given) and returns
    `{"config", "retained_cleared", "clients_bound"}` plus the URLs when both
    passwords are given.

    Either way, retained messages left in the broker's persistence store by an
    older configuration are removed (the queued messages of sessions stay).
    With `tls_cert`/`tls_key` (PEM files the broker's account can read) a TLS
    listener on `host:tls_port` is added beside the plain one.
    `user` is the OS account a root-started broker drops to; it defaults to the
    account running this function, which owns the files written here.
    """
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {port}")
    if force and reapply:
        raise ValueError("--force and --reapply exclude each other")
    directory = Path(directory).absolute()
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if tls_cert is not None and tls_key is not None:
        if not 0 < tls_port < 65536 or tls_port == port:
            raise ValueError(f"TLS port out of range or equal to --port: {tls_port}")
        tls_cert, tls_key = Path(tls_cert).absolute(), Path(tls_key).absolute()
    for value in (str(directory), host, str(tls_cert or ""), str(tls_key or "")):
        if any(c in value for c in "\r\n\0") or value != value.strip():
            raise ValueError(f"cannot be written into a Mosquitto config line: {value!r}")
    config = directory / CONFIG_NAME
    dynsec = directory / DYNSEC_NAME
    data = directory / DATA_DIR_NAME
    existing = [str(p) for p in (config, dynsec) if p.exists()]
    if reapply and not dynsec.exists():
        raise BrokerError(f"nothing to reapply: {dynsec} does not exist; run init without it")
    if existing and not (force or reapply):
        raise BrokerConfigExists(
            f"refusing to overwrite {', '.join(existing)}: a broker may be using them; "
            "choose another directory, pass --reapply (keeps the accounts) or --force "
            "(issues new passwords, drops provider accounts)"
        )
    plugin = Path(plugin) if plugin else find_dynsec_plugin()
    me = pwd.getpwuid(os.geteuid()).pw_name
    run_as = user or me
    try:
        account = pwd.getpwnam(run_as)
    except KeyError:
        raise BrokerError(f"no such OS user {run_as!r} for the broker to run as") from None
    for given in (admin_password, ingester_password):
        if given is not None and len(given) < 16:
            raise ValueError("broker passwords must be at least 16 characters")

    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    data.mkdir(mode=0o700, exist_ok=True)
    result: dict[str, Any] = {"config": str(config)}
    if reapply:
        try:
            document = json.loads(dynsec.read_text(encoding="utf-8"))
        except ValueError as e:
            raise BrokerError(f"{dynsec} is not valid JSON: {e}") from None
        _set_password(document, ADMIN_USERNAME, admin_password)
        _set_password(document, INGESTER_USERNAME, ingester_password)
        result["clients_bound"] = _bind_provider_client_ids(document)
        if admin_password is not None and ingester_password is not None:
            result["mqtt_url"] = _mqtt_url(INGESTER_USERNAME, ingester_password, host, port)
            result["mqtt_admin_url"] = _mqtt_url(ADMIN_USERNAME, admin_password, host, port)
    else:
        admin_password = admin_password or secrets.token_urlsafe(32)
        ingester_password = ingester_password or secrets.token_urlsafe(32)
        document = _dynsec_document(admin_password, ingester_password)
        result["mqtt_url"] = _mqtt_url(INGESTER_USERNAME, ingester_password, host, port)
        result["mqtt_admin_url"] = _mqtt_url(ADMIN_USERNAME, admin_password, host, port)
    try:
        result["retained_cleared"] = clear_retained(data / PERSISTENCE_FILE)
    except StoreFormatError as e:
        raise BrokerError(
            f"cannot remove retained messages from {data / PERSISTENCE_FILE}: {e}"
        ) from None
    _write_file(dynsec, json.dumps(document, indent=2) + "\n", 0o600)
    text = _config_text(directory, host, port, run_as, plugin)
    if tls_cert is not None and tls_key is not None:
        text += _tls_listener_text(host, tls_port, tls_cert, tls_key)
    _write_file(config, text, 0o644)
    if run_as != me and os.geteuid() == 0:
        # The broker rewrites the dynsec file (next to it) and owns its store.
        for path in (directory, data, dynsec, config):
            os.chown(path, account.pw_uid, account.pw_gid)
    return result


def ingester_client_id(mqtt_url: str, instance: str = "0") -> str:
    """A stable MQTT client id for an ingester instance that other accounts cannot guess.

    Mosquitto 2.0 lets any account connect with any client id and so take over
    that session: a provider that knew the ingester's client id could make the
    broker drop the ingester's queued readings (they fail the provider's ACLs).
    Deriving the id from the ingester's password keeps it stable across
    restarts (the persistent session survives) yet secret.
    """
    _host, _port, username, password = parse_mqtt_url(mqtt_url)
    digest = hashlib.sha256(f"{username}\0{password}\0{instance}".encode()).hexdigest()
    return f"vitals-ingester-{instance}-{digest[:24]}"
