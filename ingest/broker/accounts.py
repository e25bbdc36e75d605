"""Provider accounts on the broker, managed at run time over the dynamic-security
control topic (`$CONTROL/dynamic-security/v1`) with paho-mqtt: each provider
may publish only to its readings topic and read only its rejections topic.

Each provider account is bound to one MQTT client id, its username
(`provider-<provider_id>`, printed as `mqtt.client_id`): the broker refuses
that account's login with any other client id. Mosquitto disconnects a live
client when another logs in with the same client id, and (2.0) checks no
ownership of client ids; since every provider account can log in only with
its own id, no provider can take over another's connection or session.
(Mosquitto 2.0's dynamic security has no prefix rule, so a provider has one
connection at a time: publish readings and read rejections on the same one.)
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ingest.broker.config import (
    CONTROL_TOPIC,
    DEFAULT_TIMEOUT,
    PROVIDER_PREFIX,
    RESPONSE_TOPIC,
    BrokerError,
    acl,
    parse_mqtt_url,
)

_PROVIDER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def dynsec_commands(
    admin_url: str, commands: list[dict[str, Any]], timeout: float = DEFAULT_TIMEOUT
) -> list[dict[str, Any]]:
    """Send dynamic-security commands in one request and return their responses.

    Raises BrokerError if the broker is unreachable, refuses the admin login,
    does not answer within `timeout` seconds, or any command reports an error.
    """
    host, port, username, password = parse_mqtt_url(admin_url)
    tag = secrets.token_hex(8)
    tagged = [{**cmd, "correlationData": f"{tag}-{i}"} for i, cmd in enumerate(commands)]
    done = threading.Event()
    state: dict[str, Any] = {"error": None, "responses": None}

    def fail(message: str) -> None:
        if state["error"] is None:
            state["error"] = message
        done.set()

    def on_connect(
        client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        if rc.is_failure:
            fail(f"broker refused the admin login ({username}@{host}:{port}): {rc}")
        else:
            client.subscribe(RESPONSE_TOPIC, qos=1)

    def on_subscribe(
        client: mqtt.Client, _u: Any, _m: int, rcs: list[ReasonCode], _p: Properties | None
    ) -> None:
        if any(rc.is_failure for rc in rcs):
            fail(
                f"account {username!r} may not use dynamic security "
                f"(subscribing to {RESPONSE_TOPIC}: {rcs[0]})"
            )
        else:
            client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=1)

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            responses = json.loads(msg.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            return
        mine = [r for r in responses if str(r.get("correlationData", "")).startswith(tag)]
        if mine:
            state["responses"] = mine
            done.set()

    def on_disconnect(
        _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        if not done.is_set():
            fail(f"broker closed the admin connection: {rc}")

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"vitals-admin-{tag}",
        protocol=MQTTProtocolVersion.MQTTv5,
        reconnect_on_failure=False,
    )
    client.username_pw_set(username, password)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.on_disconnect = on_disconnect
    try:
        client.connect(host, port, keepalive=30, clean_start=True)
    except OSError as exc:
        raise BrokerError(f"cannot reach the MQTT broker at {host}:{port}: {exc}") from exc
    client.loop_start()
    try:
        if not done.wait(timeout):
            raise BrokerError(
                f"no dynamic-security response from {host}:{port} within {timeout:g} s "
                "(is the dynamic-security plugin loaded?)"
            )
    finally:
        client.disconnect()
        client.loop_stop()
    if state["error"] is not None:
        raise BrokerError(state["error"])
    responses: list[dict[str, Any]] = state["responses"]
    errors = [f"{r.get('command')}: {r['error']}" for r in responses if r.get("error")]
    if errors:
        raise BrokerError("dynamic security refused: " + "; ".join(errors))
    return responses


def _check_provider_id(provider_id: str) -> str:
    if not isinstance(provider_id, str) or not _PROVIDER_ID.fullmatch(provider_id):
        raise ValueError(
            f"invalid provider id {provider_id!r}: use letters, digits, '.', '_', ':', '-' "
            "(no MQTT wildcards or '/'), at most 128 characters"
        )
    return provider_id


def provider_username(provider_id: str) -> str:
    return f"{PROVIDER_PREFIX}{_check_provider_id(provider_id)}"


def provider_client_id(provider_id: str) -> str:
    """The only MQTT client id the provider's account may connect with."""
    return provider_username(provider_id)


def provider_topics(provider_id: str) -> tuple[str, str]:
    """(readings topic, rejections topic) of a provider."""
    base = f"vitals/v1/{_check_provider_id(provider_id)}"
    return f"{base}/readings", f"{base}/rejections"


def create_provider_client(
    admin_url: str, provider_id: str, timeout: float = DEFAULT_TIMEOUT
) -> dict[str, str]:
    """Create the MQTT account of a provider: publish to its readings, read its rejections.

    Returns `{"username", "password", "topic", "client_id"}`; the account can
    connect only with that client id.
    """
    username = provider_username(provider_id)
    client_id = provider_client_id(provider_id)
    readings, rejections = provider_topics(provider_id)
    password = secrets.token_urlsafe(24)
    dynsec_commands(
        admin_url,
        [
            {
                "command": "createRole",
                "rolename": username,
                "textdescription": f"provider {provider_id}: its own readings and rejections",
            }
        ],
        timeout,
    )
    try:
        dynsec_commands(
            admin_url,
            [
                {"command": "addRoleACL", "rolename": username, **acl(t, topic)}
                for t, topic in (
                    ("publishClientSend", readings),
                    ("subscribeLiteral", rejections),
                    ("publishClientReceive", rejections),
                )
            ]
            + [
                {
                    "command": "createClient",
                    "username": username,
                    "password": password,
                    "clientid": client_id,
                    "textname": f"vitals provider {provider_id}",
                    "roles": [{"rolename": username}],
                }
            ],
            timeout,
        )
    except BrokerError:
        # Leave nothing half-made behind: the role is ours (createRole succeeded).
        with contextlib.suppress(BrokerError):
            dynsec_commands(admin_url, [{"command": "deleteRole", "rolename": username}], timeout)
        raise
    return {"username": username, "password": password, "topic": readings, "client_id": client_id}


def disable_provider_client(
    admin_url: str, provider_id: str, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Refuse the provider's logins from now on (and drop its live connections)."""
    dynsec_commands(
        admin_url,
        [{"command": "disableClient", "username": provider_username(provider_id)}],
        timeout,
    )


def enable_provider_client(
    admin_url: str, provider_id: str, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Allow a disabled provider to log in again with its existing password."""
    dynsec_commands(
        admin_url,
        [{"command": "enableClient", "username": provider_username(provider_id)}],
        timeout,
    )


def delete_provider_client(
    admin_url: str, provider_id: str, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Delete the provider's MQTT account and its role."""
    username = provider_username(provider_id)
    dynsec_commands(
        admin_url,
        [
            {"command": "deleteClient", "username": username},
            {"command": "deleteRole", "rolename": username},
        ],
        timeout,
    )
