"""Fixtures for the store tests: a registry with a provider, as the flow tests have."""

from __future__ import annotations

import psycopg
import pytest

from tests.flows.helpers import Registry


@pytest.fixture
def registry(conn: psycopg.Connection, master_key: bytes) -> Registry:
    return Registry(conn, master_key)
