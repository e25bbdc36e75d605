"""Output files under the export root: what every flow and the purge share.

Exports, audiences, disclosures, statistics and the purge all write through
an `OutputRoot`: a local directory, or an `s3://bucket/prefix` URL
(CONTRACT.md v2, "Exports on object storage"; endpoint, region and
credentials from `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`), both through pyarrow filesystems.

Each file is listed in the output's `_manifest.json` with its rows and sha256
(`file_entry`), and the manifest is written last (`write_manifest`): an
output without one is incomplete.

Locally files are created 0600 and directories 0700 (`private_file`,
`private_dir`), an output is written under `.tmp-<name>` and renamed into
place (`staging`), and a rewrite goes to a temp file renamed over the old one.
S3 has no rename and no modes (access is the bucket's policy): an output is
written in place, objects are replaced whole by a PUT, and the manifest,
written last, is what makes the output complete.
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
import pyarrow.fs as pafs

MANIFEST = "_manifest.json"
PSEUDONYM_CHARS = 32
FILE_MODE = 0o600
DIR_MODE = 0o700
S3_SCHEME = "s3://"


def is_url(location: object) -> bool:
    """True for an object-storage location (`s3://bucket/prefix`)."""
    return isinstance(location, str) and location.startswith(S3_SCHEME)


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


class OutputRoot:
    """A directory of outputs on a pyarrow filesystem, addressed by relative
    posix paths (`readings/type=x/date=y/part-00000.parquet`).

    `create(rel)` / `fs` are what pyarrow writers take:
    `pq.ParquetWriter(root.create(rel), schema, filesystem=root.fs)`.
    """

    def __init__(self, fs: pafs.FileSystem, base: str, remote: bool) -> None:
        self.fs = fs
        self.base = base.rstrip("/")
        self.remote = remote

    @classmethod
    def at(cls, location: OutputRoot | Path | str) -> OutputRoot:
        """The root at a local path or an `s3://bucket/prefix` URL."""
        if isinstance(location, OutputRoot):
            return location
        if is_url(location):
            fs, base = pafs.FileSystem.from_uri(str(location).rstrip("/"))
            return cls(fs, base, remote=True)
        return cls(pafs.LocalFileSystem(), str(Path(location).resolve()), remote=False)

    @property
    def location(self) -> str:
        """What is recorded and printed: the absolute local path, or the URL."""
        return f"{S3_SCHEME}{self.base}" if self.remote else self.base

    def __str__(self) -> str:
        return self.location

    def __repr__(self) -> str:
        return f"OutputRoot({self.location!r})"

    def child(self, name: str) -> OutputRoot:
        return OutputRoot(self.fs, f"{self.base}/{name}", self.remote)

    def path(self, rel: str) -> str:
        """The filesystem path of `rel` (for `filesystem=root.fs`)."""
        return f"{self.base}/{rel}" if rel else self.base

    def ensure(self, rel: str = "") -> OutputRoot:
        """Locally mkdir -p (0700); on S3 nothing: prefixes exist through their objects."""
        if not self.remote:
            private_dir(Path(self.path(rel)))
        return self

    def create(self, rel: str) -> str:
        """The path to write `rel` at: locally its directory (0700) and an
        empty 0600 file are made first."""
        if not self.remote:
            path = Path(self.path(rel))
            private_file(private_dir(path.parent) / path.name)
        return self.path(rel)

    def exists(self) -> bool:
        """Is the root there: the local directory, or the bucket reachable."""
        try:
            if not self.remote:
                return Path(self.base).is_dir()
            bucket = self.base.split("/", 1)[0]
            return self.fs.get_file_info(bucket).type == pafs.FileType.Directory
        except OSError:
            return False

    def is_file(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type == pafs.FileType.File

    def size(self, rel: str) -> int:
        return int(self.fs.get_file_info(self.path(rel)).size)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            data: bytes = f.read()
        return data

    def sha256(self, rel: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open_input_stream(self.path(rel)) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def files(self) -> list[str]:
        """Every file under the root, as relative paths (none if the root is absent)."""
        selector = pafs.FileSelector(self.base, recursive=True, allow_not_found=True)
        cut = len(self.base) + 1
        return sorted(
            info.path[cut:]
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File
        )

    def delete(self, rel: str) -> None:
        self.fs.delete_file(self.path(rel))

    def remove(self) -> None:
        """Delete the root and all under it; what is already gone is no error."""
        if not self.remote:
            shutil.rmtree(self.base, ignore_errors=True)
            return
        with contextlib.suppress(OSError):
            self.fs.delete_dir(self.base)

    @contextlib.contextmanager
    def replacing(self, rel: str) -> Iterator[str]:
        """Yield the path to write the new content of `rel` at; it replaces the
        old one whole when the block ends: locally a temp file (0600, named
        `.<name>.tmp`) renamed over it, on S3 the object itself (a PUT is atomic)."""
        if self.remote:
            yield self.path(rel)
            return
        final = Path(self.path(rel))
        tmp = private_file(private_dir(final.parent) / f".{final.name}.tmp")
        yield str(tmp)
        os.replace(tmp, final)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write `rel` whole (locally fsynced before the rename)."""
        with self.replacing(rel) as where:
            with self.fs.open_output_stream(where) as out:
                out.write(data)
            if not self.remote:
                fd = os.open(where, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)


def visible(location: OutputRoot | Path | str) -> bool:
    """Can this process see the export root (a mounted directory, a reachable bucket)?"""
    try:
        return OutputRoot.at(location).exists()
    except OSError:
        return False


def file_entry(root: OutputRoot, rel: str, rows: int, kind: str) -> dict[str, Any]:
    return {
        "path": rel,
        "kind": kind,
        "rows": rows,
        "bytes": root.size(rel),
        "sha256": root.sha256(rel),
    }


def schema_doc(schema: pa.Schema) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]


def write_manifest(root: OutputRoot, manifest: dict[str, Any]) -> None:
    """Write `_manifest.json` whole, after the files it lists (locally: temp
    file, fsync, rename; on S3 one PUT)."""
    data = json.dumps(manifest, indent=2, sort_keys=False) + "\n"
    root.write_bytes(MANIFEST, data.encode())


class Staging:
    """An output written under `parent` and published by `publish()` (see
    `staging`): locally as `<parent>/.tmp-<name>` renamed to `<parent>/<name>`;
    on S3 (no rename) in place at `<parent>/<name>`, complete once its
    manifest is there."""

    def __init__(self, parent: OutputRoot | Path | str) -> None:
        self.parent = OutputRoot.at(parent).ensure()
        self.tmp: OutputRoot | None = None
        self.final: OutputRoot | None = None
        self.published = False

    def begin(self, name: str) -> OutputRoot:
        """Create the root (locally a 0700 temp directory) for output `name`; returns it."""
        self.final = self.parent.child(name)
        if self.parent.remote:
            self.tmp = self.final
            return self.tmp
        self.tmp = self.parent.child(f".tmp-{name}")
        os.mkdir(self.tmp.base, mode=DIR_MODE)
        os.chmod(self.tmp.base, DIR_MODE)
        return self.tmp

    @property
    def location(self) -> str:
        """Where the output is once published (recorded and printed)."""
        assert self.final is not None
        return self.final.location

    def publish(self) -> OutputRoot:
        """Put the finished output (manifest written) in place."""
        assert self.tmp is not None and self.final is not None
        if not self.parent.remote:
            os.rename(self.tmp.base, self.final.base)
        self.published = True
        return self.final


@contextlib.contextmanager
def staging(parent: OutputRoot | Path | str) -> Iterator[Staging]:
    """A `Staging` under `parent`. If the block fails, what it wrote goes:
    the temp directory, or the published one (the run's record did not
    commit, so nobody may find it)."""
    out = Staging(parent)
    try:
        yield out
    except BaseException:
        doomed = out.final if out.published else out.tmp
        if doomed is not None:
            doomed.remove()
        raise
