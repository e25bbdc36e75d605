"""Fixtures for the flow tests: a registry with providers and subjects, readings seeded by COPY."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.flows.helpers import Registry


@pytest.fixture
def registry(conn: psycopg.Connection, master_key: bytes) -> Registry:
    return Registry(conn, master_key)


@pytest.fixture
def export_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "exports"
    yield d
