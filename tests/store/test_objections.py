"""Objections and partners in the store: append-only history, refusals with
reason codes, audit rows, notices, the access extract and erasure; research
objections reach exports and the purge like a research withdrawal."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from core import crypto
from core.errors import InputError, NotFound
from core.outputs import pseudonym
from flows.export import run_export
from store import objections, partners
from store import rights as rights_queries
from tests.flows.helpers import Registry


def test_objections_are_append_only_and_audited(
    conn: psycopg.Connection, registry: Registry, master_key: bytes
) -> None:
    s = registry.subject(("collection",))
    oid = objections.add_objection(conn, master_key, s.subject_id, "marketing", "dpo")
    conn.commit()
    first = objections.lift_objection(conn, oid["objection_id"], "dpo")
    again = objections.lift_objection(conn, oid["objection_id"], "dpo")
    conn.commit()
    assert first == again  # lifting twice changes nothing
    history = objections.extract_rows(conn, uuid.UUID(s.subject_id))
    assert [(h["purpose"], h["partner_id"], h["objected_by"], h["lifted_by"]) for h in history] == [
        ("marketing", None, "dpo", "dpo")
    ]
    for statement in (
        "UPDATE objections SET purpose = 'research'",
        "DELETE FROM objections",
        "UPDATE objection_lifts SET lifted_by = 'x'",
        "DELETE FROM objection_lifts",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
        conn.rollback()
    actions = conn.execute(
        "SELECT action, subject_ref FROM audit_log"
        " WHERE action LIKE 'objection.%' ORDER BY audit_id"
    ).fetchall()
    assert actions == [("objection.add", s.subject_id), ("objection.lift", s.subject_id)]


def test_refusals_carry_reason_codes(
    conn: psycopg.Connection, registry: Registry, master_key: bytes
) -> None:
    s = registry.subject(("collection",))
    partner = partners.add_partner(conn, "p", "EU", ["disclosure"], ["heart-rate"], "admin")
    conn.commit()
    cases = [
        (
            lambda: objections.add_objection(conn, master_key, s.subject_id, "analytics", "t"),
            "invalid_purpose",
        ),
        (
            lambda: objections.add_objection(
                conn, master_key, s.subject_id, "research", "t", partner["partner_id"]
            ),
            "invalid_partner",
        ),
        (lambda: objections.add_objection(conn, master_key, "nope", "research", "t"), "invalid_id"),
        (
            lambda: objections.add_objection(conn, master_key, str(uuid.uuid4()), "research", "t"),
            "not_found",
        ),
        (
            lambda: objections.add_objection(
                conn, master_key, s.subject_id, "disclosure", "t", str(uuid.uuid4())
            ),
            "not_found",
        ),
        (lambda: objections.lift_objection(conn, str(uuid.uuid4()), "t"), "not_found"),
        (lambda: partners.add_partner(conn, "p", "EU", ["marketing"], None, "t"), "duplicate"),
        (lambda: partners.add_partner(conn, "q", "US", ["marketing"], None, "t"), "invalid_region"),
        (lambda: partners.add_partner(conn, "q", "EU", ["research"], None, "t"), "invalid_purpose"),
        (lambda: partners.add_partner(conn, "q", "EU", [], None, "t"), "invalid_purpose"),
        (
            lambda: partners.add_partner(conn, "q", "EU", ["disclosure"], ["x-ray"], "t"),
            "unsupported_type",
        ),
        (lambda: partners.add_partner(conn, " ", "EU", ["disclosure"], None, "t"), "invalid_name"),
    ]
    for call, code in cases:
        with pytest.raises(InputError) as refused:
            call()
        assert refused.value.code == code
        conn.rollback()


def test_partners_listed_and_their_pseudonyms(
    conn: psycopg.Connection, registry: Registry, master_key: bytes
) -> None:
    a = partners.add_partner(conn, "a", "FI", ["disclosure", "marketing"], None, "admin")
    b = partners.add_partner(conn, "b", "EU", ["marketing"], ["step-count", "heart-rate"], "x")
    conn.commit()
    listed = partners.list_partners(conn, "admin")
    assert [(str(p["partner_id"]), p["region"], p["purposes"], p["types"]) for p in listed] == [
        (a["partner_id"], "FI", ["marketing", "disclosure"], None),
        (b["partner_id"], "EU", ["marketing"], ["heart-rate", "step-count"]),
    ]
    with pytest.raises(NotFound):
        partners.get_partner(conn, str(uuid.uuid4()))
    sid = str(uuid.uuid4())
    pa_, pb = (partners.partner_pseudonym(master_key, p["partner_id"], sid) for p in (a, b))
    assert pa_ != pb and len(pa_) == 32
    assert pa_ == partners.partner_pseudonym(master_key, a["partner_id"].upper(), sid.upper())
    assert pa_ == pseudonym(crypto.partner_key(master_key, a["partner_id"]), sid)
    assert crypto.partner_key(master_key, a["partner_id"]) != crypto.partner_key(
        b"another-master-key-0123456789abcdef", a["partner_id"]
    )
    # the key is derived, never stored
    key = crypto.partner_key(master_key, a["partner_id"])
    dump = conn.execute("SELECT string_agg(t::text, '') FROM partners t").fetchone()[0]
    assert key.hex() not in dump


def test_research_objection_keeps_them_out_of_exports_and_queues_the_purge(
    db_url: str, conn: psycopg.Connection, registry: Registry, master_key: bytes, tmp_path: Path
) -> None:
    s = registry.subject(("collection", "research"))
    other = registry.subject(("collection", "research"))
    from datetime import UTC, datetime

    for who in (s, other):
        registry.readings(who, "heart-rate", [(datetime(2026, 1, 10, tzinfo=UTC), 70)])
    first = run_export(db_url, master_key, tmp_path, "EU")
    assert first["subjects"] == 2
    oid = objections.add_objection(conn, master_key, s.subject_id, "research", "dpo")
    conn.commit()
    queued = conn.execute(
        "SELECT export_id, subject_id::text, cause FROM export_purge_queue"
    ).fetchall()
    assert queued == [(first["export_id"], s.subject_id, "research_withdrawn")]
    assert run_export(db_url, master_key, tmp_path, "EU")["subjects"] == 1
    # the purge's own detection sees the objection too
    conn.execute("DELETE FROM export_purge_queue")
    rights_queries.purge_detect(conn)
    assert conn.execute(
        "SELECT subject_id::text FROM export_purge_queue WHERE export_id = %s",
        (first["export_id"],),
    ).fetchall() == [(s.subject_id,)]
    conn.rollback()
    objections.lift_objection(conn, oid["objection_id"], "dpo")
    conn.commit()
    assert run_export(db_url, master_key, tmp_path, "EU")["subjects"] == 2


def test_marketing_consents_are_a_purpose(conn: psycopg.Connection, registry: Registry) -> None:
    s = registry.subject(("collection", "marketing"))
    assert conn.execute(
        "SELECT purpose FROM consents WHERE consent_id = %s", (s.consents["marketing"],)
    ).fetchone() == ("marketing",)
