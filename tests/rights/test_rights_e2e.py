"""Issue 6 end to end: a subject seeded through both transports, groups and two
exports; extract; erase (with a crash injected, then re-run); purge; then
nothing of the subject is left in the database or in the export files."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pyarrow.parquet as pq
import pytest

from core.outputs import MANIFEST, pseudonym
from flows.export import export_salt, run_export
from flows.groups import derive_groups
from ingest.broker.accounts import create_provider_client
from rights import erasure
from store import registry
from tests.support import seed
from tests.support.http import running_app
from tests.support.ingester import IngesterProcess
from tests.support.mqtt import Collector, publish_qos1, start_broker
from tests.support.net import wait_for as wait_until
from tests.support.pgtools import pg_dump_data

HTTP_REF = "erase-me-http-7q2w"
MQTT_REF = "erase-me-mqtt-9z4x"
KEPT_REF = "keep-me-3k5m"


def export_pseudonyms(root: Path, kind: str | None = None) -> list[str]:
    manifest = orjson.loads((root / MANIFEST).read_bytes())
    return [
        p
        for f in manifest["files"]
        if kind in (None, f["kind"])
        for p in pq.read_table(root / f["path"])["pseudonym"].to_pylist()
    ]


def vitals(env: dict[str, str], *args: str) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if r.stdout.strip() else {}


def days_of_points(ref: str, prefix: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC).replace(hour=8, minute=0, second=0, microsecond=0)
    out = []
    for d in range(1, 21):
        when = now - timedelta(days=d)
        out.append(
            seed.data_point(ref, "blood-pressure", id=f"{prefix}-bp-{d}", when=when, value=96)
        )  # 144/96: stage 2
        out.append(seed.data_point(ref, "heart-rate", id=f"{prefix}-hr-{d}", when=when, value=108))
    return out


@pytest.mark.slow
def test_subject_rights_end_to_end(
    db_url: str,
    conn: psycopg.Connection,
    master_key: bytes,
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    http_p = seed.provider(conn, master_key, ("heart-rate", "blood-pressure"))
    mqtt_p = seed.provider(conn, master_key, ("heart-rate", "blood-pressure"))
    sid = registry.add_subject(
        conn, "EU", [(http_p["provider_id"], HTTP_REF), (mqtt_p["provider_id"], MQTT_REF)], "test"
    )["subject_id"]
    kept = seed.subject(conn, http_p["provider_id"], KEPT_REF)
    conn.commit()
    for s in (sid, kept):
        seed.consent(conn, s, types=["heart-rate", "blood-pressure"])
        seed.consent(conn, s, "analytics")
        seed.consent(conn, s, "research")

    # Through HTTP (signed webhook on the real server) ...
    with running_app(db_url) as api:

        class W:  # the shape Api.post_readings wants
            provider_id, secret = http_p["provider_id"], http_p["webhook_secret"]

        r = api.post_readings(W, days_of_points(HTTP_REF, "h") + days_of_points(KEPT_REF, "k"))
        assert r.status_code == 200 and r.json()["accepted"] == 80, r.text
        refused = api.post_readings(W, [seed.data_point(HTTP_REF, "body-weight")])
        assert refused.json()["results"][0]["reason"] == "type_not_approved"

    # ... and through MQTT (real broker, real `vitals mqtt`).
    with start_broker(tmp_path / "broker") as broker:
        creds = create_provider_client(broker.admin_url, mqtt_p["provider_id"])
        ingester = IngesterProcess(cli_env, broker, tmp_path).start()
        try:
            publish_qos1(
                broker.url(creds["username"], creds["password"]),
                creds["topic"],
                [orjson.dumps(days_of_points(MQTT_REF, "m"))],
            )
            wait_until(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM readings WHERE provider_id = %s",
                        (mqtt_p["provider_id"],),
                    ).fetchone()[0]
                    == 60
                    and not conn.commit()
                ),  # type: ignore[index,func-returns-value]
                30,
                "the MQTT readings to be committed",
            )
        finally:
            assert ingester.terminate() == 0

        # Groups and two exports.
        assert derive_groups(db_url)["started"] >= 2
        exports = [run_export(db_url, master_key, tmp_path / "exports") for _ in range(2)]
        salts = [export_salt(conn, master_key, e["export_id"]) for e in exports]
        mine = [pseudonym(s, sid) for s in salts]
        theirs = [pseudonym(s, kept) for s in salts]
        for e, p in zip(exports, mine, strict=True):
            assert p in export_pseudonyms(Path(e["path"]))

        # Access extract holds every table's rows for the subject.
        out = tmp_path / "extract.json"
        counts = vitals(cli_env, "subject", "export", sid, "--out", str(out))
        doc = orjson.loads(out.read_bytes())
        assert counts["readings"] == len(doc["readings"]) == 60 + 60  # rows: a BP reading is two
        assert {r["provider_id"] for r in doc["readings"]} == {
            http_p["provider_id"],
            mqtt_p["provider_id"],
        }
        assert {link["user_ref"] for link in doc["links"]} == {HTTP_REF, MQTT_REF}
        assert {c["purpose"] for c in doc["consents"]} == {"collection", "analytics", "research"}
        assert doc["groups"] and all(g["evidence"] for g in doc["groups"])
        assert [r["reason"] for r in doc["rejections"]] == ["type_not_approved"]
        assert sorted(d["export_id"] for d in doc["disclosures"]) == sorted(
            e["export_id"] for e in exports
        )

        # Erase: crash half way, then the CLI re-run completes.
        with pytest.raises(RuntimeError):
            erasure.erase_subject(db_url, master_key, sid, "dpo", crash_after="readings")
        receipt = vitals(cli_env, "subject", "erase", sid)
        assert receipt["counts"]["readings"] == 120
        # The database is done; the erasure is complete only once both exports are purged.
        assert receipt["status"] == "pending_purge" and receipt["completed_at"] is None
        assert receipt["exports_pending_purge"] == 2
        purged = vitals(cli_env, "export", "purge")["exports_purged"]
        assert sorted(p["export_id"] for p in purged) == sorted(e["export_id"] for e in exports)

        # Nothing of the subject in the database ...
        text = pg_dump_data(db_url)
        for secret in (sid, HTTP_REF, MQTT_REF):
            assert secret not in text
        assert KEPT_REF in text
        shash = erasure.subject_hash(master_key, sid)
        assert conn.execute(
            "SELECT completed_at IS NOT NULL FROM erasure_receipts WHERE subject_hash = %s",
            (shash,),
        ).fetchone() == (True,)
        actions = {
            r[0]
            for r in conn.execute("SELECT action FROM audit_log WHERE subject_ref = %s", (shash,))
        }
        assert {"subject.add", "consent.grant", "subject.extract", "subject.erase"} <= actions
        conn.commit()

        # ... nor in the export files, whose manifests still add up.
        for e, gone, stays in zip(exports, mine, theirs, strict=True):
            root = Path(e["path"])
            manifest = orjson.loads((root / MANIFEST).read_bytes())
            assert manifest["purged_at"]
            for f in manifest["files"]:
                table = pq.read_table(root / f["path"])
                assert table.num_rows == f["rows"]
                assert gone not in table["pseudonym"].to_pylist()
            readings = export_pseudonyms(root, "readings")
            assert stays in readings and len(readings) == manifest["rows"]["readings"]

        # The provider's user ref is now unknown, on both transports.
        ingester = IngesterProcess(cli_env, broker, tmp_path, instance=ingester.instance).start()
        try:
            with Collector(
                broker.url(creds["username"], creds["password"]),
                f"vitals/v1/{mqtt_p['provider_id']}/rejections",
            ) as rejections:
                rejections.publish(
                    creds["topic"],
                    [orjson.dumps(seed.data_point(MQTT_REF, id=str(uuid.uuid4())))],
                )
                got = rejections.wait_for(1, 20)
            assert orjson.loads(got[0].payload)["reason"] == "unknown_subject"
        finally:
            ingester.terminate()
    with running_app(db_url) as api:
        r = api.post_readings(W, [seed.data_point(HTTP_REF)])
        assert r.json()["results"][0]["reason"] == "unknown_subject"
