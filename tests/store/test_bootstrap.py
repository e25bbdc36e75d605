"""bootstrap wires Settings → pool → writer → gate, and closes what it opened."""

from __future__ import annotations

import psycopg
from pydantic import SecretStr

from bootstrap import build_services
from core.settings import Settings
from ingest.gate import CoalescingWriter
from store.db import Pool
from tests.support import seed
from tests.support.pg import TEST_SECRET_KEY


def _settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, secret_key=SecretStr(TEST_SECRET_KEY))


def test_services_commit_through_the_gate_and_close_their_pool(
    db_url: str, conn: psycopg.Connection, master_key: bytes
) -> None:
    provider = seed.provider(conn, master_key, types=("heart-rate",))["provider_id"]
    subject = seed.subject(conn, provider, "u1")
    seed.consent(conn, subject, "collection")
    conn.commit()

    services = build_services(_settings(db_url), "test", max_items=10)
    try:
        outcomes = services.gate.ingest(provider, [seed.data_point("u1", id="r1")])
        assert [o.status for o in outcomes] == ["accepted"]
    finally:
        services.close()
    assert services.pool.closed
    assert conn.execute("SELECT count(*) FROM readings").fetchone() == (1,)


def test_a_given_pool_is_left_open_and_coalescing_is_opt_in(db_url: str, pool: Pool) -> None:
    services = build_services(_settings(db_url), "test", pool=pool, coalesce=True, max_batch=7)
    assert isinstance(services.gate.writer, CoalescingWriter)
    services.close()
    assert not pool.closed
