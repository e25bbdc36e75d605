"""Importing our packages changes nothing process-wide (STYLE.md, "Configuration")."""

from __future__ import annotations

import json
import subprocess
import sys

MODULES = [
    "core.settings",
    "core.longformat",
    "core.outputs",
    "store.db",
    "store.writer",
    "flows.common",
    "flows.export",
    "flows.groups",
    "flows.purge",
    "flows.retention",
    "flows.serve",
    "cli",
    "ingest.http.app",
    "ingest.http.server",
    "rights.erasure",
    "rights.purge",
]

# Prefect configures its own logging when `prefect.main` is imported; that is
# the library's doing (prefect.main), so the probe imports it first and compares after.
PROBE = """
import json, logging, os, sys
import prefect.main
before_env = dict(os.environ)
before_root = (logging.getLogger().level, len(logging.getLogger().handlers))
for name in sys.argv[1:]:
    __import__(name)
after_root = (logging.getLogger().level, len(logging.getLogger().handlers))
keys = set(before_env) | set(os.environ)
changed = sorted(k for k in keys if before_env.get(k) != os.environ.get(k))
print(json.dumps({"env": changed, "root_logger": [before_root, after_root]}))
"""


def test_importing_every_entry_module_leaves_environment_and_logging_alone() -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "PREFECT_HOME": "/tmp/.prefect-probe"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *MODULES], capture_output=True, text=True, env=env, check=True
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["env"] == []
    before, after = found["root_logger"]
    assert before == after
