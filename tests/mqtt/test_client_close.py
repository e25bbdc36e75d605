"""How the ingester closes its connection after its own DISCONNECT.

A socket closed with unread data in its receive buffer is reset (RST), and
the peer may then lose what we wrote last: with Mosquitto, our final PUBACKs
and the DISCONNECT (tests/mqtt/test_ingester.py, the SIGTERM test). The
ingester half-closes and reads until the broker closes instead.
"""

from __future__ import annotations

import socket
import sys
import threading

import pytest

from ingest.mqtt.client import drain_and_close

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux TCP close semantics")


def _pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        broker, _ = server.accept()
    return client, broker


def _read_until_closed(sock: socket.socket) -> tuple[bytes, BaseException | None]:
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except OSError as e:
        return got, e
    return got, None


def test_a_plain_close_with_unread_data_resets_the_connection() -> None:
    """The failure mode: the peer sees a reset, not an orderly end."""
    client, broker = _pair()
    with client, broker:
        broker.sendall(b"p" * 200_000)  # PUBLISHes the client has not read
        client.sendall(b"PUBACKs+DISCONNECT")
        client.close()
        _, error = _read_until_closed(broker)
    assert isinstance(error, ConnectionResetError)


def test_drain_and_close_lets_the_peer_read_everything_and_then_close() -> None:
    client, broker = _pair()
    with client, broker:
        broker.sendall(b"p" * 200_000)
        client.sendall(b"PUBACKs+DISCONNECT")
        client.setblocking(False)  # as paho's socket
        closing = threading.Thread(target=drain_and_close, args=(client, 5.0))
        closing.start()
        got, error = _read_until_closed(broker)  # ends at the client's FIN
        broker.sendall(b"p" * 1000)  # still sending until it closes its side
        broker.close()
        closing.join(5.0)
        assert not closing.is_alive()
    assert error is None
    assert got == b"PUBACKs+DISCONNECT"


def test_drain_and_close_gives_up_after_its_timeout() -> None:
    client, broker = _pair()
    with client, broker:
        client.setblocking(False)
        drain_and_close(client, 0.2)  # the broker never closes: returns anyway
