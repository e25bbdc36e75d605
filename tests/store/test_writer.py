"""The batch writer against real PostgreSQL: outcomes, storage, refusals without values."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from schemas.reading import Component, Reading, Refusal
from store import registry
from store.writer import Writer
from tests.support import seed

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)


def hr(rid: str, user: str, value: float = 71.0, when: datetime = NOW) -> Reading:
    return Reading(
        rid, user, "heart-rate", when, (Component("heart_rate", value, "/min", value, "beats/min"),)
    )


def geo(rid: str, user: str, when: datetime = NOW) -> Reading:
    return Reading(
        rid,
        user,
        "geoposition",
        when,
        (
            Component("latitude", 60.17, "deg", 60.17, "deg"),
            Component("longitude", 24.94, "deg", 24.94, "deg"),
        ),
        latitude=60.17,
        longitude=24.94,
    )


@pytest.fixture
def world(conn: psycopg.Connection, master_key: bytes) -> dict[str, str]:
    p = seed.provider(conn, master_key, ("heart-rate", "geoposition", "blood-pressure"))
    pid = p["provider_id"]
    sid = seed.subject(conn, pid, "alice")
    cid = seed.consent(conn, sid, provider_id=pid, types=["heart-rate", "geoposition"])
    return {"provider": pid, "subject": sid, "consent": cid}


def stored(conn: psycopg.Connection) -> list[tuple]:
    conn.commit()
    return conn.execute(
        "SELECT reading_id, component, value, latitude FROM readings ORDER BY reading_id"
    ).fetchall()


def test_outcomes_in_input_order(writer: Writer, conn: psycopg.Connection, world: dict) -> None:
    p = world["provider"]
    items = [
        (p, hr("a", "alice")),
        (p, Refusal("bad", "invalid_schema", "body.heart_rate missing")),
        (p, hr("b", "bob")),
        (p, hr("a", "alice")),
        (
            p,
            Reading(
                "c",
                "alice",
                "blood-glucose",
                NOW,
                (Component("blood_glucose", 99, "mg/dL", 99, "mg/dL"),),
            ),
        ),
        (
            p,
            Reading(
                "d",
                "alice",
                "blood-pressure",
                NOW,
                (Component("systolic_blood_pressure", 120, "mm[Hg]", 120, "mmHg"),),
            ),
        ),
    ]
    got = [(o.id, o.status, o.reason) for o in writer.write(items, "test")]
    assert got == [
        ("a", "accepted", None),
        ("bad", "rejected", "invalid_schema"),
        ("b", "rejected", "unknown_subject"),
        ("a", "duplicate", None),
        ("c", "rejected", "type_not_approved"),
        ("d", "rejected", "no_consent"),
    ]
    assert stored(conn) == [("a", "heart_rate", 71.0, None)]
    # A resend of the whole batch stores nothing new.
    again = writer.write(items[:1], "test")
    assert again[0].status == "duplicate"
    assert len(stored(conn)) == 1


def test_refusals_recorded_without_values(
    writer: Writer, conn: psycopg.Connection, world: dict
) -> None:
    p = world["provider"]
    writer.write(
        [
            (p, hr("x1", "nobody", value=187.25)),
            (p, Refusal("x2", "implausible_value", "out of range")),
        ],
        "test",
    )
    rows = conn.execute(
        "SELECT reading_id, reason, transport FROM rejections ORDER BY 1"
    ).fetchall()
    assert rows == [("x1", "unknown_subject", "test"), ("x2", "implausible_value", "test")]
    cols = {
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'rejections'"
        )
    }
    assert not cols & {"value", "orig_value", "latitude", "longitude", "unit"}
    assert conn.execute("SELECT count(*) FROM readings").fetchone() == (0,)


def test_consent_window_and_withdrawal(
    writer: Writer, conn: psycopg.Connection, world: dict
) -> None:
    p, sid = world["provider"], world["subject"]
    registry.withdraw_consent(conn, world["consent"], "test")
    conn.commit()
    seed.consent(
        conn,
        sid,
        provider_id=p,
        types=["heart-rate"],
        valid_from=NOW - timedelta(days=1),
        valid_until=NOW + timedelta(hours=1),
    )
    out = writer.write(
        [
            (p, hr("in", "alice")),
            (p, hr("before", "alice", when=NOW - timedelta(days=2))),
            (p, hr("until", "alice", when=NOW + timedelta(hours=1))),
        ],
        "test",
    )
    assert [o.status for o in out] == ["accepted", "rejected", "rejected"]
    assert [o.reason for o in out][1:] == ["no_consent", "no_consent"]


def test_location_needs_its_own_consent(
    writer: Writer, conn: psycopg.Connection, world: dict
) -> None:
    p, sid = world["provider"], world["subject"]
    with_coords = Reading(
        "hr-loc",
        "alice",
        "heart-rate",
        NOW,
        (Component("heart_rate", 70, "/min", 70, "beats/min"),),
        latitude=60.1,
        longitude=24.9,
    )
    out = writer.write([(p, geo("g1", "alice")), (p, with_coords)], "test")
    assert [(o.status, o.reason) for o in out] == [("rejected", "no_consent"), ("accepted", None)]
    assert stored(conn) == [("hr-loc", "heart_rate", 70.0, None)]  # coordinates dropped

    seed.consent(conn, sid, "location", provider_id=p)
    out = writer.write([(p, geo("g2", "alice"))], "test")
    assert out[0].status == "accepted"
    assert conn.execute(
        "SELECT component, value, latitude FROM readings WHERE reading_id = 'g2' ORDER BY 1"
    ).fetchall() == [("latitude", 60.17, 60.17), ("longitude", 24.94, 60.17)]


def test_suspended_provider_and_ended_subject(
    writer: Writer, conn: psycopg.Connection, world: dict
) -> None:
    p = world["provider"]
    registry.set_provider_status(conn, p, "suspended", "test")
    conn.commit()
    assert writer.write([(p, hr("s1", "alice"))], "test")[0].reason == "type_not_approved"
    registry.set_provider_status(conn, p, "active", "test")
    conn.execute("UPDATE subjects SET status = 'ended'")
    conn.commit()
    assert writer.write([(p, hr("s2", "alice"))], "test")[0].reason == "unknown_subject"


def test_ids_copy_cannot_carry_are_refused(
    writer: Writer, conn: psycopg.Connection, world: dict
) -> None:
    p = world["provider"]
    out = writer.write(
        [(p, hr("nul\x00id", "alice")), (p, hr("x" * 10_000, "alice")), (p, hr("ok", "alice"))],
        "test",
    )
    assert [o.status for o in out] == ["rejected", "rejected", "accepted"]
    assert {o.reason for o in out[:2]} == {"invalid_schema"}


def test_withdrawal_committed_first_wins(writer: Writer, db_url: str, world: dict) -> None:
    """A batch that reaches the gate while a withdrawal is in flight waits for it,
    then sees it: no reading commits after the withdrawal."""
    p = world["provider"]
    with psycopg.connect(db_url) as w:
        registry.withdraw_consent(w, world["consent"], "test")  # holds the subject lock
        result: list = []
        t = threading.Thread(
            target=lambda: result.extend(
                writer.write([(p, hr(f"race-{i}", "alice")) for i in range(50)], "test")
            )
        )
        t.start()
        time.sleep(0.5)
        assert t.is_alive(), "the batch must wait for the in-flight withdrawal"
        w.commit()
    t.join(10)
    assert {o.reason for o in result} == {"no_consent"}


def test_withdrawal_racing_many_batches(writer: Writer, db_url: str, world: dict) -> None:
    """Stress: batches started after the withdrawal returned store nothing."""
    p = world["provider"]
    withdrawn_at: list[float] = []
    late_accepted: list[str] = []
    stop = threading.Event()

    def pump() -> None:
        n = 0
        while not stop.is_set():
            started = time.monotonic()
            out = writer.write([(p, hr(f"b{n}-{i}", "alice")) for i in range(20)], "test")
            if withdrawn_at and started > withdrawn_at[0]:
                late_accepted.extend(o.id or "" for o in out if o.status == "accepted")
            n += 1

    threads = [threading.Thread(target=pump) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    with psycopg.connect(db_url) as w:
        registry.withdraw_consent(w, world["consent"], "test")
        w.commit()
    withdrawn_at.append(time.monotonic())
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(10)
    assert late_accepted == []


def test_batch_is_atomic_when_database_fails(
    writer: Writer, conn: psycopg.Connection, world: dict, pg_server_url: str
) -> None:
    """Nothing of a batch is stored when its transaction fails."""
    from core.errors import StorageError

    p = world["provider"]
    conn.execute("ALTER TABLE rejections ADD CONSTRAINT no_test CHECK (transport <> 'boom')")
    conn.commit()
    with pytest.raises(StorageError):
        writer.write([(p, hr("ok1", "alice")), (p, hr("r1", "nobody"))], "boom")
    assert conn.execute("SELECT count(*) FROM readings").fetchone() == (0,)


def test_unique_ids_are_per_provider(
    writer: Writer, conn: psycopg.Connection, master_key: bytes, world: dict
) -> None:
    other = seed.provider(conn, master_key, ("heart-rate",))["provider_id"]
    registry.add_link(conn, world["subject"], other, "alice-at-other", "test")
    conn.commit()
    seed.consent(conn, world["subject"], provider_id=other)
    out = writer.write(
        [(world["provider"], hr("same", "alice")), (other, hr("same", "alice-at-other"))], "test"
    )
    assert [o.status for o in out] == ["accepted", "accepted"]
    assert uuid.UUID(world["provider"]) != uuid.UUID(other)


def test_refused_copy_does_not_shadow_a_consented_one(
    writer: Writer, conn: psycopg.Connection, world: dict
) -> None:
    """Same provider reading id twice in a batch, the first refused: the second is stored."""
    p = world["provider"]
    out = writer.write([(p, hr("twin", "nobody")), (p, hr("twin", "alice"))], "test")
    assert [(o.status, o.reason) for o in out] == [
        ("rejected", "unknown_subject"),
        ("accepted", None),
    ]
    assert stored(conn) == [("twin", "heart_rate", 71.0, None)]


def test_a_resend_in_the_next_batch_is_a_duplicate(writer: Writer, world: dict) -> None:
    """Resends are found by probing the unique key, batch after batch."""
    p = world["provider"]
    first = writer.write([(p, hr(f"rs{i}", "alice")) for i in range(20)], "test")
    again = writer.write([(p, hr(f"rs{i}", "alice")) for i in range(10, 30)], "test")
    assert {o.status for o in first} == {"accepted"}
    assert [o.status for o in again] == ["duplicate"] * 10 + ["accepted"] * 10


def test_concurrent_batches_with_the_same_readings_store_each_once(
    writer: Writer, conn: psycopg.Connection, world: dict
) -> None:
    """Two batches racing with the same ids: the loser is decided again, so every
    reading is stored once and reported accepted exactly once."""
    p = world["provider"]
    batch = [(p, hr(f"race{i}", "alice")) for i in range(300)]
    results: list[list] = [[], [], [], []]

    def go(k: int) -> None:
        results[k] = writer.write(batch, "test")

    threads = [threading.Thread(target=go, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    accepted = sum(1 for r in results for o in r if o.status == "accepted")
    duplicate = sum(1 for r in results for o in r if o.status == "duplicate")
    assert (accepted, duplicate) == (300, 900)
    assert conn.execute("SELECT count(*) FROM readings").fetchone() == (300,)


def test_unknown_provider_id_is_refused_not_crashed(writer: Writer, world: dict) -> None:
    out = writer.write([("not-a-uuid", hr("x", "alice"))], "test")
    assert (out[0].status, out[0].reason) == ("rejected", "unknown_subject")


# Location withdrawal ----------------------------------------------------------

LOC_T0 = NOW.replace(minute=0, second=0) - timedelta(hours=12)


def _at(h: int) -> datetime:
    return LOC_T0 + timedelta(hours=h)


def located_world(
    conn: psycopg.Connection, master: bytes, writer: Writer
) -> tuple[str, str, str, str]:
    """A subject with geoposition and heart-rate-with-coordinates readings at
    +1h, +2h, +4h, +6h; location consents: `wide` (always, any provider) and
    `window` [+2h, +6h) for this provider. Returns (provider, subject, wide, window)."""
    pid = seed.provider(conn, master, ("heart-rate", "geoposition"))["provider_id"]
    sid = seed.subject(conn, pid, "loc-user")
    seed.consent(conn, sid)
    wide = seed.consent(conn, sid, "location")
    window = seed.consent(
        conn, sid, "location", provider_id=pid, valid_from=_at(2), valid_until=_at(6)
    )
    batch: list[tuple[str, Reading | Refusal]] = []
    for h in (1, 2, 4, 6):
        batch.append((pid, geo(f"geo-{h}", "loc-user", when=_at(h))))
        r = hr(f"hr-{h}", "loc-user", when=_at(h))
        batch.append(
            (
                pid,
                Reading(
                    r.id,
                    r.user_ref,
                    r.type,
                    r.effective_time,
                    r.components,
                    latitude=61.5,
                    longitude=23.75,
                ),
            )
        )
    assert {o.status for o in writer.write(batch, "test")} == {"accepted"}
    return pid, sid, wide, window


def located(conn: psycopg.Connection) -> tuple[list[str], list[tuple[str, bool]]]:
    """(geoposition reading ids, [(heart-rate reading id, has coordinates)])."""
    conn.rollback()
    geos = conn.execute(
        "SELECT DISTINCT reading_id FROM readings WHERE type = 'geoposition' ORDER BY 1"
    ).fetchall()
    hrs = conn.execute(
        "SELECT reading_id, latitude IS NOT NULL AND longitude IS NOT NULL FROM readings "
        "WHERE type = 'heart-rate' ORDER BY 1"
    ).fetchall()
    conn.rollback()
    return [g[0] for g in geos], [(h[0], h[1]) for h in hrs]


def test_location_withdrawal_removes_uncovered_coordinates_cli(
    conn: psycopg.Connection, master_key: bytes, writer: Writer, cli_env: dict[str, str]
) -> None:
    import subprocess
    import sys

    import orjson

    _, _, wide, window = located_world(conn, master_key, writer)
    r = subprocess.run(
        [sys.executable, "-m", "cli", "consent", "withdraw", wide],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    # The window [+2h, +6h) still covers +2h (its start) and +4h, not +6h (its end).
    geos, hrs = located(conn)
    assert geos == ["geo-2", "geo-4"]
    assert hrs == [("hr-1", False), ("hr-2", True), ("hr-4", True), ("hr-6", False)]
    out = orjson.loads(r.stdout)
    assert (out["geoposition_readings_deleted"], out["coordinates_cleared"]) == (2, 2)
    # The withdrawal, the deletion and the nulling are one transaction, audited.
    detail = conn.execute(
        "SELECT detail FROM audit_log WHERE action = 'consent.withdraw'"
    ).fetchone()[0]  # type: ignore[index]
    assert detail["geoposition_readings_deleted"] == 2 and detail["coordinates_cleared"] == 2
    conn.rollback()

    # The last location consent goes: no coordinates left; the health values stay.
    result = registry.withdraw_consent(conn, window, "test")
    conn.commit()
    geos, hrs = located(conn)
    assert geos == [] and [h for h in hrs if h[1]] == [] and len(hrs) == 4
    assert (result["geoposition_readings_deleted"], result["coordinates_cleared"]) == (2, 2)
    # Withdrawing again changes nothing.
    registry.withdraw_consent(conn, window, "test")
    conn.commit()
    assert located(conn) == ([], hrs)
