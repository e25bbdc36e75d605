"""Output files under the export root: what every flow and the purge share.

Exports, audiences, disclosures, statistics and the purge all write here:
files are created 0600 and directories 0700 (`private_file`, `private_dir`),
each file is listed in the output's `_manifest.json` with its rows and sha256
(`file_entry`), and the manifest is written last, atomically
(`write_manifest`): an output without one is incomplete.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

MANIFEST = "_manifest.json"
PSEUDONYM_CHARS = 32
FILE_MODE = 0o600
DIR_MODE = 0o700


def pseudonym(key: bytes, subject_id: uuid.UUID | str) -> str:
    """HMAC-SHA256 of the canonical subject id under `key`, first 32 hex chars:
    stable for one key, unlinkable across keys."""
    message = str(uuid.UUID(str(subject_id))).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:PSEUDONYM_CHARS]


def private_dir(path: Path) -> Path:
    """mkdir -p with every directory it creates 0700 (existing ones are left)."""
    missing = []
    for d in (path, *path.parents):
        if d.exists():
            break
        missing.append(d)
    for d in reversed(missing):
        d.mkdir(mode=DIR_MODE, exist_ok=True)
        os.chmod(d, DIR_MODE)  # mode is masked by the umask; be exact
    return path


def private_file(path: Path) -> Path:
    """Create (or truncate) `path` as an empty file of mode 0600 before a writer
    opens it: writers that open with O_TRUNC keep an existing file's mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(root: Path, path: Path, rows: int, kind: str) -> dict[str, Any]:
    return {
        "path": path.relative_to(root).as_posix(),
        "kind": kind,
        "rows": rows,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def schema_doc(schema: pa.Schema) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Write `_manifest.json` atomically (temp file, fsync, rename)."""
    tmp = private_file(root / f".{MANIFEST}.tmp")
    with tmp.open("w") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / MANIFEST)


class Staging:
    """An output directory written as `<parent>/.tmp-<name>` and renamed to
    `<parent>/<name>` by `publish()` (see `staging`)."""

    def __init__(self, parent: Path) -> None:
        self.parent = private_dir(Path(parent).resolve())
        self.tmp: Path | None = None
        self.final: Path | None = None
        self.published = False

    def begin(self, name: str) -> Path:
        """Create the temp directory (0700) for output `name`; returns it."""
        self.tmp, self.final = self.parent / f".tmp-{name}", self.parent / name
        self.tmp.mkdir(mode=DIR_MODE)
        os.chmod(self.tmp, DIR_MODE)
        return self.tmp

    def publish(self) -> Path:
        """Rename the finished directory (manifest written) into place."""
        assert self.tmp is not None and self.final is not None
        os.rename(self.tmp, self.final)
        self.published = True
        return self.final


@contextlib.contextmanager
def staging(parent: Path) -> Iterator[Staging]:
    """A `Staging` under `parent`. If the block fails, what it wrote goes:
    the temp directory, or the published one (the run's record did not
    commit, so nobody may find it)."""
    out = Staging(parent)
    try:
        yield out
    except BaseException:
        doomed = out.final if out.published else out.tmp
        if doomed is not None:
            shutil.rmtree(doomed, ignore_errors=True)
        raise
