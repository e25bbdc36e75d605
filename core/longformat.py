"""The long format of exports and disclosures (CONTRACT.md, "Parquet exports"):
`readings/type=<type>/date=<YYYY-MM-DD>/part-NNNNN.parquet` with columns
pseudonym, type, component, effective_time, value, unit.

Rows arrive from a COPY ... TO STDOUT (CSV, ordered by type and date) as
chunks; pyarrow's CSV reader parses them in blocks and `PartitionWriter`
keeps one ParquetWriter open at a time, so memory stays bounded whatever
the size.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from core.outputs import OutputRoot, file_entry

Progress = Callable[[int], None]

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


class CopyStream(io.RawIOBase):
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


class PartitionWriter:
    """Readings arrive ordered by (type, date): one ParquetWriter open at a time."""

    def __init__(self, root: OutputRoot, rows_per_file: int, rows_per_group: int) -> None:
        self.root = root
        self.rows_per_file = rows_per_file
        self.rows_per_group = rows_per_group
        self.files: list[dict[str, Any]] = []
        self._key: tuple[str, str] | None = None
        self._part = 0
        self._writer: pq.ParquetWriter | None = None
        self._path: str | None = None
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
            self._path = f"readings/type={type_}/date={date}/part-{self._part:05d}.parquet"
            self._writer = pq.ParquetWriter(
                self.root.create(self._path),
                READINGS_SCHEMA,
                compression="zstd",
                filesystem=self.root.fs,
            )
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


def write_readings(
    chunks: Iterator[Any],
    root: OutputRoot,
    progress: Progress | None = None,
    block_size: int = 1 << 20,
    rows_per_file: int = 1_000_000,
) -> tuple[list[dict[str, Any]], set[str]]:
    """Write the COPY chunks under `root/readings`; returns the file entries and
    the pseudonyms seen."""
    seen: set[str] = set()
    out = PartitionWriter(root, rows_per_file, rows_per_group=max(1, min(rows_per_file, 250_000)))
    stream = CopyStream(chunks)
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
            split_batch(batch, out, seen)
            if progress:
                progress(batch.num_rows)
    return out.close(), seen


def split_batch(batch: pa.RecordBatch, out: PartitionWriter, seen: set[str]) -> None:
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
