"""Database boundary: the pool, named queries, and the project's own errors.

The SQL ships inside this package (`sql/queries/*.sql`,
`sql/migrations/NNNN_name.sql`) and is found through importlib.resources,
so a non-editable install works as well as a checkout.

Driver errors never leave this layer as psycopg exceptions: callers see
`StorageUnavailable` (retry later: HTTP 503, MQTT no-ack) or `StorageError`.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator
from importlib.resources import files
from importlib.resources.abc import Traversable

import psycopg
import psycopg_pool
from psycopg.adapt import PyFormat

from core.errors import StorageError, StorageUnavailable

# What callers above the store name a connection or the pool in their
# signatures, so they need not import the driver.
Connection = psycopg.Connection
Pool = psycopg_pool.ConnectionPool

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def sql_dir(kind: str) -> Traversable:
    """`sql/<kind>` ("migrations" or "queries") inside the installed package."""
    return files("sql") / kind


def sql_files(kind: str) -> list[Traversable]:
    """The `*.sql` files of `sql/<kind>`, sorted by name."""
    found = [f for f in sql_dir(kind).iterdir() if f.is_file() and f.name.endswith(".sql")]
    return sorted(found, key=lambda f: f.name)


@functools.cache
def queries() -> dict[str, str]:
    """All named queries in sql/queries/*.sql (`-- name: x` blocks), loaded once."""
    found: dict[str, str] = {}
    for path in sql_files("queries"):
        text = path.read_text(encoding="utf-8")
        marks = list(_NAME.finditer(text))
        for i, m in enumerate(marks):
            end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
            name = m.group(1)
            if name in found:
                raise RuntimeError(f"duplicate query name {name!r} in {path.name}")
            found[name] = text[m.end() : end].strip().rstrip(";")
    return found


def q(name: str) -> str:
    return queries()[name]


_UNAVAILABLE = (psycopg.OperationalError, psycopg_pool.PoolTimeout, psycopg.InterfaceError)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn driver errors into StorageUnavailable / StorageError."""
    try:
        yield
    except _UNAVAILABLE as e:
        raise StorageUnavailable(str(e).splitlines()[0] if str(e) else type(e).__name__) from e
    except psycopg.Error as e:
        raise StorageError(str(e).splitlines()[0] if str(e) else type(e).__name__) from e


@contextlib.contextmanager
def transaction(pool: Pool, timeout: float | None = None) -> Iterator[Connection]:
    """One pooled connection for one transaction, owned here: committed when the
    block succeeds, rolled back when it raises. Driver errors (the wait for a
    connection included, `timeout` or the pool's) become StorageUnavailable /
    StorageError."""
    with translate_errors(), pool.connection(timeout=timeout) as conn:
        yield conn


def fast_bytes_copy(conn: psycopg.Connection) -> None:
    """Dump `bytes` for a bytea column (or a uuid one: the writer's COPY sends a
    uuid as its 16 bytes) with psycopg's C dumper: by oid, psycopg looks up the
    Python dumper of the DB-API `Binary` wrapper, a Python call per value."""
    conn.adapters.register_dumper(bytes, conn.adapters.get_dumper(bytes, PyFormat.BINARY))


def _configure(conn: psycopg.Connection) -> None:
    fast_bytes_copy(conn)
    # Per-connection staging tables for the writer (emptied at every commit).
    with conn.cursor() as cur:
        cur.execute(q("create_staging"))
    conn.commit()


def make_pool(url: str, *, min_size: int = 1, max_size: int = 8, timeout: float = 10.0) -> Pool:
    """The one pool of a process. Opens lazily; connections heal after an outage."""
    pool = psycopg_pool.ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        configure=_configure,
        check=psycopg_pool.ConnectionPool.check_connection,
        reconnect_timeout=0,  # keep trying forever; callers see StorageUnavailable meanwhile
        open=False,
        kwargs={"autocommit": False},
    )
    pool.open(wait=False)
    return pool


def connect(url: str, **kwargs: object) -> psycopg.Connection:
    with translate_errors():
        return psycopg.connect(url, **kwargs)  # type: ignore[arg-type]
