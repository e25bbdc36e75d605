"""Mosquitto's persistence store (`data/mosquitto.db`): removing retained messages.

The broker refuses retained messages (`retain_available false`), but a store
written by an older configuration may still hold some: whole readings with
their values and user ids, handed to every later subscriber and kept on disk
with no end. `clear_retained` rewrites the store without them while the broker
is stopped (it is run by `vitals broker init --reapply`), keeping everything
else, in particular the QoS 1 messages queued for persistent sessions.

The file format is Mosquitto 2.0's (database version 6): a 15-byte magic, a
CRC (unused, 0) and the version, then chunks of `type` and `length` (4 bytes
each, big-endian) and `length` bytes. The chunks that matter here start with
the 8-byte id of a stored message: MSG_STORE (the message itself), CLIENT_MSG
(a session's reference to it) and RETAIN (the retained-message reference).
Dropping the RETAIN chunks, and every MSG_STORE chunk no session refers to,
leaves exactly what Mosquitto itself would keep once the retained messages
were cleared.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

MAGIC = b"\x00\xb5\x00mosquitto db"
SUPPORTED_VERSIONS = (6,)
CHUNK_MSG_STORE = 2
CHUNK_CLIENT_MSG = 3
CHUNK_RETAIN = 4

_HEADER = struct.Struct(">II")  # crc, db version
_CHUNK = struct.Struct(">II")  # chunk type, payload length
_STORE_ID_BYTES = 8


class StoreFormatError(ValueError):
    """The persistence file is not a Mosquitto 2.0 store this module can read."""


def _chunks(data: bytes) -> list[tuple[int, bytes]]:
    if not data.startswith(MAGIC):
        raise StoreFormatError("not a Mosquitto persistence file (bad magic)")
    offset = len(MAGIC)
    if len(data) < offset + _HEADER.size:
        raise StoreFormatError("truncated persistence file header")
    _crc, version = _HEADER.unpack_from(data, offset)
    if version not in SUPPORTED_VERSIONS:
        raise StoreFormatError(f"unsupported persistence file version {version}")
    offset += _HEADER.size
    chunks: list[tuple[int, bytes]] = []
    while offset < len(data):
        if len(data) - offset < _CHUNK.size:
            raise StoreFormatError("truncated chunk header")
        kind, length = _CHUNK.unpack_from(data, offset)
        offset += _CHUNK.size
        if len(data) - offset < length:
            raise StoreFormatError("truncated chunk")
        chunks.append((kind, data[offset : offset + length]))
        offset += length
    return chunks


def _store_id(payload: bytes) -> bytes:
    if len(payload) < _STORE_ID_BYTES:
        raise StoreFormatError("chunk too short for a message id")
    return payload[:_STORE_ID_BYTES]


def retained_count(path: Path) -> int:
    """Number of retained messages in the store at `path` (0 when there is none)."""
    if not path.exists():
        return 0
    return sum(1 for kind, _ in _chunks(path.read_bytes()) if kind == CHUNK_RETAIN)


def clear_retained(path: Path) -> int:
    """Rewrite the store at `path` without retained messages; return how many were removed.

    Only while the broker is stopped: a running broker rewrites the file from
    its memory. Raises StoreFormatError (and leaves the file alone) when the
    file is not a store this module understands.
    """
    if not path.exists():
        return 0
    data = path.read_bytes()
    chunks = _chunks(data)
    retained = {_store_id(p) for kind, p in chunks if kind == CHUNK_RETAIN}
    if not retained:
        return 0
    queued = {_store_id(p) for kind, p in chunks if kind == CHUNK_CLIENT_MSG}
    out = bytearray(data[: len(MAGIC) + _HEADER.size])
    for kind, payload in chunks:
        if kind == CHUNK_RETAIN:
            continue
        if kind == CHUNK_MSG_STORE:
            store_id = _store_id(payload)
            if store_id in retained and store_id not in queued:
                continue  # only the retained reference kept it: gone with it
        out += _CHUNK.pack(kind, len(payload)) + payload
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(out)
        fh.flush()
        os.fsync(fh.fileno())
    stat = path.stat()
    os.chmod(tmp, stat.st_mode & 0o777)
    if os.geteuid() == 0:
        os.chown(tmp, stat.st_uid, stat.st_gid)
    os.replace(tmp, path)
    return len(retained)
