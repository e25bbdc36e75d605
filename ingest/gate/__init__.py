"""vitals: ingest.gate, the one gate every transport and `vitals validate` use.

payload → parsed readings (`payload`) → `Gate` (parse, write, outcomes) → the
writer, or the coalescing writer that shares transactions (`coalesce`).
"""

from ingest.gate.coalesce import CoalescingWriter
from ingest.gate.gate import BatchWriter, Gate, Verdict, refusal
from ingest.gate.payload import Format, MalformedJSON, ShapeError, TooManyItems

__all__ = [
    "BatchWriter",
    "CoalescingWriter",
    "Format",
    "Gate",
    "MalformedJSON",
    "ShapeError",
    "TooManyItems",
    "Verdict",
    "refusal",
]
