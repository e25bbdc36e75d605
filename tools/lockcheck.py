"""Every distribution installed in this environment is in uv.lock at a locked
version (uv.lock may hold one version per Python or platform fork).

    .venv/bin/python tools/lockcheck.py uv.lock

Exit 1 with the differences otherwise (`make lint` runs it after `uv lock --check`).
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(lock_path: str) -> int:
    lock = tomllib.loads(Path(lock_path).read_text())
    # a package may be locked at several versions, one per Python/platform fork
    locked: dict[str, set[str]] = {}
    for package in lock["package"]:
        if "version" in package:
            locked.setdefault(_norm(package["name"]), set()).add(package["version"])
    installed = {_norm(d.metadata["Name"]): d.version for d in metadata.distributions()}
    problems = [
        f"{name}=={version} is installed but not in the lock"
        if name not in locked
        else f"{name}=={version} is installed, the lock says {' or '.join(sorted(locked[name]))}"
        for name, version in sorted(installed.items())
        if version not in locked.get(name, set())
    ]
    for problem in problems:
        print(problem, file=sys.stderr)
    verdict = "ok" if not problems else f"{len(problems)} differ"
    print(f"{len(installed)} installed distributions checked against {lock_path}: {verdict}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "uv.lock"))
