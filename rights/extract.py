"""The access extract: everything held about a subject, as one JSON document."""

from __future__ import annotations

from typing import IO

from core.errors import NotFound
from rights.encode import dumps
from store import disclosures, objections, registry
from store import rights as queries
from store.db import Connection, translate_errors


def write_extract(conn: Connection, subject_id: str, out: IO[bytes], actor: str) -> dict[str, int]:
    """Write one JSON document with everything held about the subject.

    Streams readings; returns counts per section. Audited as a read of
    personal data; commits on `conn`.
    """
    sid = registry.parse_uuid(subject_id, "subject")
    with translate_errors():
        subject = queries.extract_subject(conn, sid)
        if subject is None:
            raise NotFound("subject", subject_id)
        sections = queries.extract_sections(conn, sid)
        sections["objections"] = objections.extract_rows(conn, sid)
        sections["partner_disclosures"] = disclosures.extract_rows(conn, sid)
        out.write(b'{"format":"vitals-subject-extract/1","subject":' + dumps(subject))
        for key, rows in sections.items():
            out.write(b',"' + key.encode() + b'":' + dumps(rows))
        out.write(b',"readings":[')
        n = 0
        for row in queries.stream_readings(conn, sid):
            out.write((b"," if n else b"") + dumps(row))
            n += 1
        out.write(b"]}\n")
        counts = {k: len(v) for k, v in sections.items()} | {"readings": n}
        registry.audit(conn, actor, "subject.extract", sid, counts=counts)
        conn.commit()
    return counts
