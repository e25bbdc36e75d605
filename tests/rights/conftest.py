"""Fixtures for the rights tests: the flow tests' registry of providers and
subjects with readings seeded by COPY, and an export root (the purge rewrites
real exports)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.flows.helpers import Registry


@pytest.fixture
def registry(conn: psycopg.Connection, master_key: bytes) -> Registry:
    return Registry(conn, master_key)


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    return tmp_path / "exports"
