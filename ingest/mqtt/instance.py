"""Stable ingester instance ids for replicas that are recreated at will.

Each instance id names a persistent MQTT session (`ingester_client_id`). An
id that changes on every recreation (a container hostname) abandons a session
each time, and the abandoned session keeps receiving its share of the shared
subscription. `claim_instance` instead hands out the lowest free number of a
small fixed set, holding an exclusive lock on `DIR/instance-N.lock` for the
life of the process: replicas that share DIR (one volume) get 0, 1, 2, ...,
and a recreated replica takes over the number (and session) its predecessor
left. The lock goes with the process, however it ends.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

MAX_SLOTS = 64


class InstanceSlotsFull(RuntimeError):
    """Every instance number in DIR is held by a running ingester."""


def claim_instance(directory: Path, slots: int = MAX_SLOTS) -> tuple[str, IO[bytes]]:
    """Lock the lowest free instance number in `directory`.

    Returns the number (as the instance id) and the open lock file: keep it
    open for as long as the instance runs.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for number in range(slots):
        fd = os.open(directory / f"instance-{number}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        handle = os.fdopen(fd, "r+b")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return str(number), handle
    raise InstanceSlotsFull(f"all {slots} ingester instance numbers in {directory} are in use")
