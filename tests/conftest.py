"""The test session's plugins: every shared fixture lives in tests/support/."""

from __future__ import annotations

import pytest

from flows.common import quiet_prefect_env

pytest_plugins = [
    "tests.support.leaks",
    "tests.support.pg",
    "tests.support.mqtt",
    "tests.support.ingester",
    "tests.support.http",
    "tests.support.s3",
]


def pytest_configure(config: pytest.Config) -> None:
    quiet_prefect_env()  # before any test module imports prefect (flows/common.py)
