"""What every flow shares: a quiet, offline Prefect environment and small helpers.

Prefect reads its settings when it is first imported, so the entry points
(`vitals` main, the test session, the benchmarks) call `quiet_prefect_env()`
before anything imports `prefect`; importing this module changes nothing.
Values already in the environment win: an operator's `PREFECT_API_URL` or
`PREFECT_HOME` is never overridden.

- `PREFECT_HOME` is project-local (`<repo>/.prefect`), not `~/.prefect`.
- No telemetry: `DO_NOT_TRACK=1`, server analytics off.
- The ephemeral (temporary) server gets 90 s to start, not 20: its first start
  creates and migrates a SQLite database, which takes longer on a cold disk.
- Without `PREFECT_API_URL`, Prefect starts that temporary local server itself;
  with it, flows report to the configured server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent

QUIET_PREFECT_ENV: dict[str, str] = {
    "PREFECT_HOME": str(PROJECT_ROOT / ".prefect"),
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    "PREFECT_CLI_PROMPT": "false",
}


def quiet_prefect_env(environ: Any = None) -> None:
    """Set the quiet offline defaults unless already set. Idempotent."""
    env = os.environ if environ is None else environ
    for key, value in QUIET_PREFECT_ENV.items():
        env.setdefault(key, value)


def prefect_server_configured() -> bool:
    """True when flows report to a Prefect server the operator runs."""
    return bool(os.environ.get("PREFECT_API_URL"))


def transient_failure(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry I/O failures, not bugs or refused input."""
    from core.errors import StorageUnavailable

    try:
        state.result()
    except (StorageUnavailable, OSError):
        return True
    except Exception:
        return False
    return False


def notify_late_objections(database_url: str, master: bytes, run_id: str) -> int:
    """After an audience for a partner or a disclosure committed: objections its
    snapshot could not see, by people it went out with, owe the partner a
    notice (`store.disclosures.notify_late_objections`). Owns its transaction."""
    from store import disclosures
    from store.db import connect, translate_errors

    with translate_errors(), connect(database_url) as conn:
        added = disclosures.notify_late_objections(conn, master, run_id)
        conn.commit()
    return added
