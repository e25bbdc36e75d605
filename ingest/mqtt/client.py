"""The ingester's paho client: reading paused while the in-flight bytes are
full, and a graceful close after its own DISCONNECT."""

from __future__ import annotations

import logging
import select
import socket
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core import metrics

log = logging.getLogger("vitals.mqtt")


class ByteLimitedClient(mqtt.Client):
    """A paho client whose network thread stops reading while `paused()` says so.

    paho (pinned at 2.2 in uv.lock) reads in `loop_read`, called by its network
    thread when the socket is readable; this one reads packet by packet and
    stops as soon as the in-flight bytes are full, so at most one message
    overshoots. While paused it waits briefly instead of reading, and the loop
    goes on writing (PUBACKs, refusals, pings). It still reads until connected,
    so that a CONNACK is never left unread.

    After its own DISCONNECT it closes the connection gracefully (`_sock_close`).
    """

    paused: Callable[[float], bool] = staticmethod(lambda _wait: False)
    close_timeout = 5.0  # seconds to wait for the broker to read our DISCONNECT
    _disconnecting = False

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        if self._sock is None:
            return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
        count = max(len(self._out_messages) + len(self._in_messages), 1)
        for _ in range(count):
            if self.is_connected() and self.paused(0.05):
                metrics.MQTT_PAUSED.set(1)
                return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
            metrics.MQTT_PAUSED.set(0)
            if self._sock is None:
                return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == mqtt.MQTTErrorCode.MQTT_ERR_AGAIN:
                return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def disconnect(
        self, reasoncode: ReasonCode | None = None, properties: Properties | None = None
    ) -> mqtt.MQTTErrorCode:
        self._disconnecting = True
        return super().disconnect(reasoncode, properties)

    def _sock_close(self) -> None:
        """Close the socket; after our DISCONNECT, only once the broker has read it.

        paho closes the socket as soon as the DISCONNECT is written. The broker
        keeps sending PUBLISHes until it reads that DISCONNECT, so the socket
        often has unread data then, and Linux answers close() of such a socket
        with a RST instead of a FIN. A busy Mosquitto, woken by the reset, drops
        the connection ("closed its connection") without processing what it had
        received and not yet read: our last PUBACKs and the DISCONNECT. The
        session then redelivered messages we had committed and acknowledged.
        So: half-close (FIN after everything we wrote), read and discard until
        the broker closes its side (it has then processed all of it), then
        close. What we discard is unacknowledged and will be redelivered.
        """
        sock = self._sock
        if sock is not None and self._disconnecting:
            self._disconnecting = False
            drain_and_close(sock, self.close_timeout)  # type: ignore[arg-type]
        super()._sock_close()


def drain_and_close(sock: socket.socket, timeout: float) -> None:
    """Half-close `sock` and read until the peer closes too (or `timeout` passes)."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return  # already reset or closed: nothing more to deliver
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            readable, _, _ = select.select([sock], [], [], left)
            if readable and not sock.recv(65536):
                return  # the broker closed its side: it has read our DISCONNECT
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            return
    log.warning(
        "the broker did not close the connection after our DISCONNECT; closing anyway",
        extra={"event": "disconnect_timeout"},
    )
