"""Every file of the shared real-data folder (../shared/realdata, third-party,
unmodified) through the real, signed webhook: each item gets the outcome the
MANIFEST and the README's decisions say, nothing answers 5xx, and no name or
narrative from the files is stored anywhere in the database.

The per-folder tally of accepted and refused items (by reason) is printed at
the end of the module and kept in docs/realdata.md.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from typing import Any

import psycopg
import pytest

from schemas import TYPES, Reading, parse_data_point, parse_fhir
from tests.support import seed
from tests.support.http import Api, World
from tests.support.shared_data import shared_path

REALDATA = shared_path("realdata")
with (REALDATA / "MANIFEST.tsv").open(newline="") as fh:
    MANIFEST = {row["path"]: row for row in csv.DictReader(fh, delimiter="\t")}
FHIR = "application/fhir+json"

# Near misses of the MANIFEST that mean one of the nine types: accepted.
ACCEPTED_NEAR = {"bp-panel-55284-4", "oral-temp-8331-1", "glucose-serum-2345-7"}
# Items of a supported code that are refused, per file: (reason, how many).
REFUSED_SUPPORTED: dict[str, Counter[str]] = {
    "fhir-ig-examples/inferno-reference-server-data/us_quality_core_bundle_patient.json": Counter(
        # glucose: dataAbsentReason, valueString, valueCodeableConcept; a BP
        # component with dataAbsentReason
        invalid_schema=4
    ),
    "fhir-ig-examples/inferno-reference-server-data/uscore_bundle_patient_355.json": Counter(
        invalid_schema=6  # dataAbsentReason on 4 Observations and on 2 BP components
    ),
    "fhir-ig-examples/inferno-reference-server-data/uscore_bundle_patient_85.json": Counter(
        invalid_schema=1  # SpO2 with dataAbsentReason
    ),
    "fhir-ig-examples/phd-2.0.0/compound-numeric-blood-pressure-no-mean.json": Counter(),
    "fhir-ig-examples/us-core-8.0.0/bp-data-absent.json": Counter(invalid_schema=1),
}
# Items of an unsupported code refused for their status first (invalid_schema).
STATUS_REFUSED = {
    # 99354-3 with status cancelled
    "fhir-ig-examples/inferno-reference-server-data/us_quality_core_bundle_patient.json": 1
}
# Open mHealth points with the IEEE 1752.1-style header (`uuid`, no `id`, no
# `user_id`): no reading id and no person to link, refused as invalid_schema
# ("header.id: required") by the Open mHealth parser.
HEADER_REFUSED_FOLDERS = {"omh/jupyterhealth-exchange"}
# Items the MANIFEST counts as no-LOINC that are MDC codes of the nine: accepted.
MDC_ACCEPTED = {"fhir-ig-examples/phd-2.0.0/glucose-observation.json": 1}

TALLY: dict[str, Counter[str]] = defaultdict(Counter)


@pytest.fixture(scope="module")
def api(shared_api: Api) -> Api:
    return shared_api


def folder_of(path: str) -> str:
    return "/".join(path.split("/")[:2])


def _user_refs(payload: Any, fhir: bool) -> set[str]:
    """The provider user refs the file's readings name (to link them to subjects)."""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    if fhir:
        parsed = parse_fhir(payload, now=now)
    else:
        items = payload if isinstance(payload, list) else [payload]
        parsed = [parse_data_point(p, now=now) for p in items]
    return {r.user_ref for r in parsed if isinstance(r, Reading)}


def _world(conn: psycopg.Connection, master: bytes, refs: set[str]) -> World:
    p = seed.provider(conn, master)
    sid = ""
    for ref in sorted(refs):
        sid = seed.subject(conn, p["provider_id"], ref)
        seed.consent(conn, sid, "collection")
        seed.consent(conn, sid, "location")
    return World(p["provider_id"], p["webhook_secret"], "", sid)


def _expected_accepted(path: str) -> int:
    if folder_of(path) in HEADER_REFUSED_FOLDERS:
        return 0
    counts = MANIFEST[path]["counts_by_type"]
    total = 0
    for part in filter(None, counts.split(";")):
        key, _, n = part.rpartition("=")
        name = key.split("@")[0]
        if name in TYPES or name.removeprefix("near:") in ACCEPTED_NEAR:
            total += int(n)
    return total - sum(REFUSED_SUPPORTED.get(path, Counter()).values()) + MDC_ACCEPTED.get(path, 0)


def _names(payload: Any) -> set[str]:
    """Personal names and narrative found in a file: Patient names, reference
    displays, narrative divs (words long enough not to match by chance)."""
    found: set[str] = set()

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            if o.get("resourceType") == "Patient":
                for name in o.get("name", []) or []:
                    for part in [name.get("family"), *(name.get("given") or [])]:
                        if isinstance(part, str) and len(part) >= 5:
                            found.add(part)
            ref = o.get("reference")
            display = o.get("display")
            if isinstance(ref, str) and "Patient" in ref and isinstance(display, str):
                found.update(w for w in display.split() if len(w) >= 5)
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(payload)
    return found


PATHS = sorted(MANIFEST)


@pytest.mark.parametrize("path", PATHS)
def test_every_item_gets_its_outcome(
    api: Api, shared_conn: psycopg.Connection, master_key: bytes, path: str
) -> None:
    row = MANIFEST[path]
    raw = (REALDATA / path).read_bytes()
    folder = folder_of(path)
    try:
        payload = json.loads(raw)
    except ValueError:  # Apple Health export.xml: not JSON
        world = _world(shared_conn, master_key, set())
        r = api.post_readings(world, None, body=raw)
        assert r.status_code == 400, r.text  # refused cleanly, nothing stored
        assert r.json()["error"] == "malformed_json"
        TALLY[folder]["request refused: malformed_json"] += int(row["n_items"])
        return
    fhir = isinstance(payload, dict) and "resourceType" in payload
    world = _world(shared_conn, master_key, _user_refs(payload, fhir))
    r = api.post_readings(world, payload, content_type=FHIR if fhir else "application/json")
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        # a vendor payload that is neither a data point nor an array of them
        assert row["format"] == "vendor-json", (r.status_code, r.text)
        assert r.status_code == 400, r.text
        TALLY[folder][f"request refused: {r.json()['error']}"] += int(row["n_items"])
        return
    results = r.json()["results"]
    not_observation = [
        x
        for x in results
        if x["reason"] == "invalid_schema" and "must be Observation" in x["detail"]
    ]
    items = [x for x in results if x not in not_observation]
    if fhir:
        # Non-Observation entries (Patient, Encounter, Claim ...) are refused
        # with no id: nothing of them is kept.
        assert all(x["id"] is None for x in not_observation)
        TALLY[folder]["other resources refused (not Observation)"] += len(not_observation)
    assert len(items) == int(row["n_items"]), (len(items), row["n_items"])
    outcome = Counter(x["status"] if x["status"] != "rejected" else x["reason"] for x in items)
    for key, n in outcome.items():
        TALLY[folder][key] += n
    assert outcome["duplicate"] == 0
    assert outcome["accepted"] == _expected_accepted(path), outcome
    # what is refused is refused for the MANIFEST's reasons
    unsupported = (
        sum(
            int(part.rpartition("=")[2])
            for part in row["counts_by_type"].split(";")
            if part.startswith(("unsup:", "vendor-payload", "not-fhir"))
            or part.startswith("near:avg-bp")
        )
        - MDC_ACCEPTED.get(path, 0)
        - STATUS_REFUSED.get(path, 0)
    )
    refused_known = sum(REFUSED_SUPPORTED.get(path, Counter()).values())
    refused_known += STATUS_REFUSED.get(path, 0)
    if fhir:
        assert outcome["unsupported_type"] == unsupported, outcome
        assert outcome["invalid_schema"] == refused_known, outcome
    elif folder_of(path) in HEADER_REFUSED_FOLDERS:
        assert outcome == Counter(invalid_schema=int(row["n_items"])), outcome
    else:
        assert outcome["unsupported_type"] + outcome["invalid_schema"] == unsupported, outcome
    assert set(outcome) <= {"accepted", "unsupported_type", "invalid_schema"}, outcome
    if path.startswith("negative/"):
        assert outcome == Counter(unsupported_type=int(row["n_items"]))

    # No name or narrative of the file is stored anywhere.
    names = _names(payload)
    dump = _dump(shared_conn)
    assert "<div" not in dump and "xhtml" not in dump  # no narrative
    if names:
        # whole words: a Patient id such as `patientExample-1` is the provider's
        # user ref (linked by this test), not a name
        leaked = {n for n in names if re.search(rf"(?<![A-Za-z]){re.escape(n)}(?![a-z])", dump)}
        assert not leaked, leaked


def _dump(conn: psycopg.Connection) -> str:
    """Every row of every table of the public schema, as text (pg_dump-like)."""
    conn.rollback()
    tables = [
        t
        for (t,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
    ]
    parts = []
    for t in tables:
        parts += [str(row[0]) for row in conn.execute(f'SELECT t::text FROM "{t}" t').fetchall()]
    conn.rollback()
    return "\n".join(parts)


def test_zz_per_folder_table(capsys: pytest.CaptureFixture[str]) -> None:
    """The tally of every folder (printed; docs/realdata.md keeps it)."""
    if not TALLY:
        pytest.skip("no file ran")
    lines = ["| folder | accepted | refused (by reason) |", "|---|---|---|"]
    for folder in sorted(TALLY):
        c = TALLY[folder]
        refused = ", ".join(f"{k} {n}" for k, n in sorted(c.items()) if k != "accepted" and n)
        lines.append(f"| {folder} | {c['accepted']} | {refused or '-'} |")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert re.search(r"\| synthea/", "\n".join(lines))
