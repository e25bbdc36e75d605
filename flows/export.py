"""Pseudonymised Parquet exports for analysts (CONTRACT.md, "Parquet exports").

Layout under `$VITALS_EXPORT_DIR/<export_id>/`:
  readings/type=<type>/date=<YYYY-MM-DD>/part-NNNNN.parquet   long format
  groups/part-00000.parquet                                   memberships
  _manifest.json                                              files, rows, sha256, schema, cut-off

`run_export` works in one REPEATABLE READ transaction whose start is the
cut-off: eligible subjects (unwithdrawn research consent covering the
cut-off; FI residents only in FI exports) get a pseudonym = HMAC-SHA256 of
their subject id under a fresh random per-export salt, kept in a temp table.
Readings stream out of PostgreSQL with COPY, ordered by type and time, are
parsed in blocks by pyarrow's CSV reader and written one partition at a
time: memory stays bounded whatever the size. Files go to a temp directory
that is renamed into place only when complete; the export, the subjects it
disclosed and an audit row are recorded in the same transaction. The SQL
(snapshot, lock, COPY streams, the record) is in `store.exports`.

Only what the research consent covers goes out: readings of its types (and
provider), and group memberships whose evidence types it covers entirely
(`flows.groups.EVIDENCE_TYPES`).

An export holds a shared advisory lock from before its snapshot until after
its commit, and erasure takes it exclusively before marking a subject
'erasing': an export either leaves an erased subject out, or commits first and
the erasure queues it for purge.

Files are created 0600 and directories 0700 (`private_file`, `private_dir`):
exports hold health data of people.

For the purge (`vitals export purge`): the salt is stored encrypted in
`exports.salt_enc` (`export_salt` + `pseudonym` find a subject's rows again),
and `file_entry` / `write_manifest` rewrite a manifest after files change.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from flows import common  # noqa: F401  (quiet Prefect env before prefect is imported)

# isort: split
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core import crypto
from core.errors import InputError
from flows.common import Progress
from flows.groups import EVIDENCE_TYPES, EVIDENCE_WITHOUT_TYPES
from store import exports as queries
from store.db import Connection
from store.registry import audit

REGIONS = ("FI", "EU")
MANIFEST = "_manifest.json"
FORMAT = "vitals-export/1"
UTC_US = pa.timestamp("us", tz="UTC")

# `type` is dictionary-encoded: it is also the hive partition key (`type=`), which
# pyarrow/pandas discover as a dictionary column, so the two merge and
# `pandas.read_parquet(export + "/readings")` works as is.
TYPE_DICTIONARY = pa.dictionary(pa.int32(), pa.string())
READINGS_SCHEMA = pa.schema(
    [
        pa.field("pseudonym", pa.string(), nullable=False),
        pa.field("type", TYPE_DICTIONARY, nullable=False),
        pa.field("component", pa.string(), nullable=False),
        pa.field("effective_time", UTC_US, nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("unit", pa.string(), nullable=False),
    ]
)
GROUPS_SCHEMA = pa.schema(
    [
        pa.field("pseudonym", pa.string(), nullable=False),
        pa.field("group_key", pa.string(), nullable=False),
        pa.field("rule_version", pa.string(), nullable=False),
        pa.field("valid_from", UTC_US, nullable=False),
        pa.field("valid_until", UTC_US, nullable=True),
        pa.field("evidence", pa.string(), nullable=False),  # JSON: the aggregates that decided
    ]
)
# Columns of the COPY in export_readings: the schema's, with time as epoch
# microseconds, plus the partition date.
_CSV_TYPES = {
    "pseudonym": pa.string(),
    "type": pa.string(),
    "component": pa.string(),
    "effective_time": pa.int64(),
    "value": pa.float64(),
    "unit": pa.string(),
    "date": pa.string(),
}
_SAFE_TYPE = re.compile(r"^[a-z0-9-]{1,64}$")
_SAFE_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
PSEUDONYM_CHARS = 32

# The CLI's progress bar, when the export runs as a Prefect flow in-process.
PROGRESS: contextvars.ContextVar[Progress | None] = contextvars.ContextVar(
    "vitals_export_progress", default=None
)


def pseudonym(salt: bytes, subject_id: uuid.UUID | str) -> str:
    """Keyed and stable within one export (one salt), unlinkable across exports."""
    message = str(uuid.UUID(str(subject_id))).encode()
    return hmac.new(salt, message, hashlib.sha256).hexdigest()[:PSEUDONYM_CHARS]


def export_salt(conn: Connection, master: bytes, export_id: str) -> bytes:
    """The per-export salt, decrypted (for the purge to find a subject's rows)."""
    salt_enc = queries.encrypted_salt(conn, export_id)
    if salt_enc is None:
        raise InputError("not_found", f"export {export_id} does not exist")
    return crypto.decrypt(master, salt_enc)


FILE_MODE = 0o600
DIR_MODE = 0o700


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


class _CopyStream(io.RawIOBase):
    """A readable file over the chunks (one per row) of a COPY ... TO STDOUT.

    Reads are filled as far as asked: pyarrow's CSV reader treats every read
    as a block, so short reads would make one tiny batch per row.
    """

    def __init__(self, chunks: Iterator[Any]) -> None:
        self._chunks = chunks
        self._pending = bytearray()

    def readable(self) -> bool:
        return True

    def peek_empty(self) -> bool:
        if not self._pending:
            self._pending += next(self._chunks, b"")
        return not self._pending

    def readinto(self, b: Any) -> int:
        want = len(b)
        while len(self._pending) < want:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._pending += chunk
        n = min(want, len(self._pending))
        b[:n] = self._pending[:n]
        del self._pending[:n]
        return n


class _PartitionWriter:
    """Readings arrive ordered by (type, date): one ParquetWriter open at a time."""

    def __init__(self, root: Path, rows_per_file: int, rows_per_group: int) -> None:
        self.root = root
        self.rows_per_file = rows_per_file
        self.rows_per_group = rows_per_group
        self.files: list[dict[str, Any]] = []
        self._key: tuple[str, str] | None = None
        self._part = 0
        self._writer: pq.ParquetWriter | None = None
        self._path: Path | None = None
        self._file_rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def write(self, type_: str, date: str, table: pa.Table) -> None:
        if (type_, date) != self._key:
            self._close_file()
            if not _SAFE_TYPE.match(type_) or not _SAFE_DATE.match(date):
                raise ValueError(f"unsafe partition value {type_!r}/{date!r}")
            self._key, self._part = (type_, date), 0
        while table.num_rows:
            room = self.rows_per_file - self._file_rows - self._pending_rows
            if room <= 0:  # this file is full: the partition continues in the next part
                self._close_file()
                self._part += 1
                continue
            piece, table = table.slice(0, room), table.slice(room)
            self._pending.append(piece)
            self._pending_rows += piece.num_rows
            if self._pending_rows >= self.rows_per_group:
                self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._writer is None:
            assert self._key is not None
            type_, date = self._key
            directory = private_dir(self.root / "readings" / f"type={type_}" / f"date={date}")
            self._path = private_file(directory / f"part-{self._part:05d}.parquet")
            self._writer = pq.ParquetWriter(self._path, READINGS_SCHEMA, compression="zstd")
        self._writer.write_table(pa.concat_tables(self._pending))
        self._file_rows += self._pending_rows
        self._pending, self._pending_rows = [], 0

    def _close_file(self) -> None:
        self._flush()
        if self._writer is not None and self._path is not None:
            self._writer.close()
            self.files.append(file_entry(self.root, self._path, self._file_rows, "readings"))
        self._writer, self._path, self._file_rows = None, None, 0

    def close(self) -> list[dict[str, Any]]:
        self._close_file()
        return self.files


def _write_readings(
    conn: Connection,
    root: Path,
    cutoff: datetime,
    progress: Progress | None,
    block_size: int,
    rows_per_file: int,
) -> tuple[list[dict[str, Any]], set[str]]:
    seen: set[str] = set()
    out = _PartitionWriter(root, rows_per_file, rows_per_group=max(1, min(rows_per_file, 250_000)))
    with queries.readings_csv(conn, cutoff) as chunks:
        stream = _CopyStream(chunks)
        if not stream.peek_empty():
            reader = pcsv.open_csv(
                stream,
                read_options=pcsv.ReadOptions(column_names=list(_CSV_TYPES), block_size=block_size),
                convert_options=pcsv.ConvertOptions(
                    column_types=_CSV_TYPES,
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            for batch in reader:
                _split_batch(batch, out, seen)
                if progress:
                    progress(batch.num_rows)
    return out.close(), seen


def _split_batch(batch: pa.RecordBatch, out: _PartitionWriter, seen: set[str]) -> None:
    key = pc.binary_join_element_wise(batch.column("type"), batch.column("date"), "/")
    runs = pc.run_end_encode(key)
    table = pa.Table.from_arrays(
        [
            batch.column("pseudonym"),
            pc.dictionary_encode(batch.column("type")),
            batch.column("component"),
            pc.cast(batch.column("effective_time"), UTC_US),
            batch.column("value"),
            batch.column("unit"),
        ],
        schema=READINGS_SCHEMA,
    )
    seen.update(pc.unique(batch.column("pseudonym")).to_pylist())
    start = 0
    for end, value in zip(runs.run_ends.to_pylist(), runs.values.to_pylist(), strict=True):
        type_, _, date = value.partition("/")
        out.write(type_, date, table.slice(start, end - start))
        start = end


def _evidence_types() -> dict[str, list[str] | None]:
    return EVIDENCE_TYPES | {key: [] for key in EVIDENCE_WITHOUT_TYPES}


def _write_groups(
    conn: Connection, root: Path, cutoff: datetime, batch_rows: int = 10_000
) -> tuple[list[dict[str, Any]], set[str]]:
    path = private_file(private_dir(root / "groups") / "part-00000.parquet")
    seen: set[str] = set()
    rows = 0
    with (
        pq.ParquetWriter(path, GROUPS_SCHEMA, compression="zstd") as writer,
        queries.group_memberships(conn, cutoff, _evidence_types(), batch_rows) as batches,
    ):
        for chunk in batches:
            columns = list(zip(*chunk, strict=True))
            table = pa.Table.from_arrays(
                [pa.array(col, type=f.type) for col, f in zip(columns, GROUPS_SCHEMA, strict=True)],
                schema=GROUPS_SCHEMA,
            )
            writer.write_table(table)
            seen.update(columns[0])
            rows += len(chunk)
    return [file_entry(root, path, rows, "groups")], seen


def run_export(
    database_url: str,
    master: bytes,
    export_dir: Path,
    region: str = "EU",
    *,
    actor: str = "flows.export",
    progress: Progress | None = None,
    block_size: int = 1 << 20,  # pyarrow reads blocks ahead in parallel: 4 MiB blocks
    # cost ~200 MB more peak RSS at 5M rows for no speed gain (bench.flows)
    rows_per_file: int = 1_000_000,
) -> dict[str, Any]:
    """Write one export and record it; returns export_id, path, rows, subjects, ..."""
    if region not in REGIONS:
        raise InputError("invalid_region", f"region must be FI or EU, not {region!r}")
    export_dir = private_dir(Path(export_dir).resolve())
    salt = secrets.token_bytes(32)
    tmp: Path | None = None
    final: Path | None = None
    try:
        # The shared erasure lock is held from before the snapshot until after
        # its commit (store.exports.export_snapshot).
        with queries.export_snapshot(database_url) as (conn, cutoff):
            export_id = f"{cutoff:%Y%m%dT%H%M%SZ}-{region.lower()}-{secrets.token_hex(4)}"
            ids = queries.eligible_subjects(conn, cutoff, region)
            by_pseudonym = {pseudonym(salt, sid): sid for sid in ids}
            queries.load_pseudonyms(conn, by_pseudonym)

            tmp = export_dir / f".tmp-{export_id}"
            tmp.mkdir(mode=DIR_MODE)
            os.chmod(tmp, DIR_MODE)
            private_dir(tmp / "readings")
            files, seen = _write_readings(conn, tmp, cutoff, progress, block_size, rows_per_file)
            group_files, group_seen = _write_groups(conn, tmp, cutoff)
            disclosed = sorted(by_pseudonym[p] for p in seen | group_seen)
            rows = sum(f["rows"] for f in files)
            group_rows = sum(f["rows"] for f in group_files)
            final = export_dir / export_id
            result = {
                "export_id": export_id,
                "path": str(final),
                "region": region,
                "cutoff": cutoff.isoformat(),
                "rows": rows,
                "group_rows": group_rows,
                "subjects": len(disclosed),
                "files": len(files) + len(group_files),
            }
            write_manifest(
                tmp,
                {
                    "format": FORMAT,
                    "export_id": export_id,
                    "region": region,
                    "cutoff": cutoff.isoformat(),
                    "created_at": datetime.now(UTC).isoformat(),
                    "consent": "unwithdrawn research consent covering the cut-off; "
                    "FI residents only in exports to region FI",
                    "pseudonym": "HMAC-SHA256 of the subject under a random per-export "
                    f"salt, first {PSEUDONYM_CHARS} hex chars; stable within this "
                    "export only",
                    "partitioning": "readings/type=<type>/date=<YYYY-MM-DD> (hive, UTC dates)",
                    "schema": {
                        "readings": schema_doc(READINGS_SCHEMA),
                        "groups": schema_doc(GROUPS_SCHEMA),
                    },
                    "rows": {"readings": rows, "groups": group_rows},
                    "subject_count": len(disclosed),
                    "files": files + group_files,
                    "purged_at": None,
                },
            )
            queries.record_export(
                conn,
                export_id=export_id,
                region=region,
                cutoff=cutoff,
                salt_enc=crypto.encrypt(master, salt),
                path=str(final),
                row_count=rows,
                actor=actor,
                subjects=disclosed,
            )
            audit(
                conn,
                actor,
                "export.disclose",
                None,
                export_id=export_id,
                region=region,
                cutoff=cutoff.isoformat(),
                subject_count=len(disclosed),
                row_count=rows,
                group_rows=group_rows,
                path=str(final),
            )
            os.rename(tmp, final)
            tmp = None
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        elif final is not None:  # renamed, but the record did not commit
            shutil.rmtree(final, ignore_errors=True)
        raise
    return result


# Prefect ----------------------------------------------------------------------


@task(
    name="write-export",
    retries=1,
    retry_delay_seconds=[30],
    retry_condition_fn=common.transient_failure,
    cache_policy=NO_CACHE,
)
def export_task(region: str, actor: str) -> dict[str, Any]:
    from core.settings import Settings

    settings = Settings()
    return run_export(
        settings.require_database_url(),
        settings.require_secret_key(),
        settings.export_dir,
        region,
        actor=actor,
        progress=PROGRESS.get(),
    )


@flow(name="vitals-export", description="Pseudonymised Parquet export for analysts.")
def export_flow(region: str = "EU", actor: str = "prefect") -> dict[str, Any]:
    result = export_task(region, actor)
    get_run_logger().info(
        "export %s (%s): %s rows of %s subjects",
        result["export_id"],
        result["region"],
        result["rows"],
        result["subjects"],
    )
    return result
