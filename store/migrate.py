"""A short forward-only migrator: sql/migrations/NNNN_name.sql, recorded in a table."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources.abc import Traversable

import psycopg
from psycopg import sql

from core.errors import MigrationError
from store.db import Pool, sql_files, translate_errors

_LOCK_KEY = 0x76_69_74_61_6C_73  # "vitals": one migrator at a time


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Traversable

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


_FILE = re.compile(r"([0-9]{4})_(.*)\.sql")


def available() -> list[Migration]:
    """The migrations shipped in sql/migrations, in version order."""
    found = []
    for path in sql_files("migrations"):
        m = _FILE.fullmatch(path.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), path))
    return found


def _ensure_table(conn: psycopg.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version     integer PRIMARY KEY,
            name        text NOT NULL,
            checksum    text NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def applied(conn: psycopg.Connection) -> dict[int, str]:
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return {}
    return dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())


def pending(conn: psycopg.Connection) -> list[Migration]:
    done = applied(conn)
    return [m for m in available() if m.version not in done]


def pending_names(pool: Pool, *, wait: float = 2.0) -> list[str]:
    """File names of the migrations not yet applied, read on a pooled connection
    (waiting at most `wait` seconds, or the pool's timeout if shorter, for one).
    Owns its (read-only) transaction; driver errors become StorageError."""
    with translate_errors(), pool.connection(timeout=min(wait, pool.timeout)) as conn:
        return [m.path.name for m in pending(conn)]


APP_ROLE = "vitals_app"


def enable_app_login(url: str, password: str, role: str = APP_ROLE) -> None:
    """Let the application role (created NOLOGIN by migration 0006) log in with
    `password`. Sent as a SCRAM-SHA-256 verifier made here, so the password
    itself never reaches the server or its statement log."""
    if len(password) < 16:
        raise ValueError("the application role's password must be at least 16 characters")
    with translate_errors(), psycopg.connect(url, autocommit=True) as conn:
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
        conn.execute(
            sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(verifier.decode())
            )
        )


def migrate(url: str) -> list[str]:
    """Apply every pending migration, each in its own transaction. Returns the names applied."""
    names: list[str] = []
    with translate_errors(), psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            _ensure_table(conn)
            done = applied(conn)
            for m in available():
                if m.version in done:
                    if done[m.version] != m.checksum:
                        raise MigrationError(
                            f"migration {m.path.name} changed after it was applied"
                        )
                    continue
                with conn.transaction():
                    conn.execute(m.sql)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES (%s, %s, %s)",
                        (m.version, m.name, m.checksum),
                    )
                names.append(m.path.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return names
