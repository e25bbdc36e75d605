"""The one place that wires a process: Settings → pool → writer → gate.

Every long-running entry point (`vitals serve`, `vitals mqtt`, the benchmarks)
builds its services here instead of assembling the pool, the writer and the
gate itself, so each transport receives what it needs and never constructs
store internals:

    services = build_services(settings, "mqtt", max_items=5000, max_bytes=256 * 1024)
    try:
        ...  # hand services.gate to the transport; services.pool to the registry
    finally:
        services.close()

The registry and the rights operations are functions over a connection
(`store.registry`, `rights`), taken from `services.pool` per request.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import Settings
from ingest.gate import CoalescingWriter, Gate
from store.db import Pool, make_pool
from store.writer import Writer


@dataclass
class Services:
    """What a process runs on. `close()` finishes the gate, then the pool."""

    pool: Pool
    writer: Writer
    gate: Gate
    owns_pool: bool = True

    def close(self) -> None:
        self.gate.close()
        if self.owns_pool:
            self.pool.close()


def build_pool(
    settings: Settings, *, min_size: int = 1, max_size: int = 8, timeout: float = 10.0
) -> Pool:
    """The process's one connection pool (opens lazily; heals after an outage)."""
    return make_pool(
        settings.require_database_url(), min_size=min_size, max_size=max_size, timeout=timeout
    )


def build_services(
    settings: Settings,
    transport: str,
    *,
    pool: Pool | None = None,
    pool_min: int = 1,
    pool_max: int = 2,
    pool_timeout: float = 5.0,
    coalesce: bool = False,
    max_batch: int | None = None,  # coalesced readings per transaction (default 5,000)
    max_items: int | None = None,
    max_bytes: int | None = None,
) -> Services:
    """pool → writer → gate for one transport.

    `pool` may be given (tests, an app sharing one); it is then not closed by
    `Services.close`. `coalesce` puts a CoalescingWriter between the gate and
    the writer, so concurrent requests share transactions (HTTP)."""
    owns = pool is None
    if pool is None:
        pool = build_pool(settings, min_size=pool_min, max_size=pool_max, timeout=pool_timeout)
    writer = Writer(pool)
    sink: Writer | CoalescingWriter = writer
    if coalesce:
        sink = CoalescingWriter(writer, transport, max_batch=max_batch or 5000)
    gate = Gate(sink, transport, max_items=max_items, max_bytes=max_bytes)
    return Services(pool=pool, writer=writer, gate=gate, owns_pool=owns)
