"""Every output on S3 (CONTRACT.md v2, "Exports on object storage"), against a
real S3-protocol server on loopback (tests/support/s3.py): export, audience,
disclosure and statistics written under `s3://bucket/prefix` hold what the
same flow writes to a local directory, every object is in its manifest with
the right sha256, the manifest is written last (a failed run leaves no
object), the purge rewrites objects and manifest, and analysts read the
outputs back with pandas, Polars and DuckDB.

DuckDB reads S3 itself through its httpfs extension, which it downloads on
first use; offline (as here) it reads the same objects through a pyarrow
dataset (README, "Reading outputs on S3")."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pandas as pd
import psycopg
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import flows.export
from core.outputs import MANIFEST
from core.settings import Settings
from flows.audience import run_audience
from flows.disclosure import run_disclosure
from flows.export import export_salt, run_export
from flows.statistics import run_statistics
from rights import erasure
from rights.purge import purge_exports
from tests.flows.helpers import Registry, Subject
from tests.flows.purposes_world import GROUP, World, build_world
from tests.flows.test_export import D1, D2
from tests.support.s3 import S3Server

pytestmark = pytest.mark.usefixtures("s3")

VITALS = Path(sys.executable).with_name("vitals")


def fs_of(url: str) -> tuple[pafs.FileSystem, str]:
    fs, path = pafs.FileSystem.from_uri(url)
    return fs, path


def objects(url: str) -> list[str]:
    fs, base = fs_of(url)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    return sorted(i.path[len(base) + 1 :] for i in infos if i.type == pafs.FileType.File)


def check_complete(url: str) -> dict[str, Any]:
    """The manifest lists exactly the output's objects, with rows, bytes and sha256."""
    assert url.startswith("s3://")
    fs, base = fs_of(url)
    with fs.open_input_stream(f"{base}/{MANIFEST}") as f:
        manifest: dict[str, Any] = json.loads(f.read())
    for entry in manifest["files"]:
        with fs.open_input_stream(f"{base}/{entry['path']}") as f:
            data = f.read()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["bytes"] == len(data)
        meta = pq.read_metadata(f"{base}/{entry['path']}", filesystem=fs)
        assert meta.num_rows == entry["rows"]
    listed = {e["path"] for e in manifest["files"]}
    assert set(objects(url)) == listed | {MANIFEST}
    return manifest


def local_rows(path: str, sub: str = "readings") -> Counter[tuple[Any, ...]]:
    table = pq.read_table(Path(path) / sub)
    return Counter(tuple(r.values()) for r in table.to_pylist())


def s3_rows(url: str, sub: str = "readings") -> Counter[tuple[Any, ...]]:
    fs, base = fs_of(url)
    table = pq.read_table(f"{base}/{sub}", filesystem=fs)
    return Counter(tuple(r.values()) for r in table.to_pylist())


def without_pseudonym(rows: Counter[tuple[Any, ...]]) -> Counter[tuple[Any, ...]]:
    out: Counter[tuple[Any, ...]] = Counter()
    for row, n in rows.items():
        out[row[1:]] += n
    return out


# Settings -----------------------------------------------------------------------


def test_settings_take_an_s3_url_and_keep_paths_for_directories(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VITALS_EXPORT_DIR", "s3://bucket/some/prefix/")
    assert Settings().export_dir == "s3://bucket/some/prefix"
    monkeypatch.setenv("VITALS_EXPORT_DIR", "./exports")
    assert Settings().export_dir == Path("./exports")
    monkeypatch.setenv("VITALS_EXPORT_DIR", "s3://")
    with pytest.raises(ValueError, match="bucket"):
        Settings()


# Exports and the purge -----------------------------------------------------------


@pytest.fixture
def people(registry: Registry) -> list[Subject]:
    out = []
    for i in range(3):
        s = registry.subject(("collection", "analytics", "research"))
        registry.readings(s, "heart-rate", [(D1, 60 + i), (D2, 70 + i)])
        registry.readings(s, "step-count", [(D1, 1000 + i)])
        out.append(s)
    return out


def test_export_on_s3_is_the_local_export_and_readable(
    db_url: str,
    people: list[Subject],
    master_key: bytes,
    s3_export_dir: str,
    tmp_path: Path,
) -> None:
    remote = run_export(db_url, master_key, s3_export_dir, "EU")
    local = run_export(db_url, master_key, tmp_path, "EU")
    assert remote["path"] == f"{s3_export_dir}/{remote['export_id']}"
    manifest = check_complete(remote["path"])
    assert manifest["rows"] == {"readings": 9, "groups": 0} and remote["subjects"] == 3
    assert without_pseudonym(s3_rows(remote["path"])) == without_pseudonym(
        local_rows(local["path"])
    )
    assert {k: v for k, v in remote.items() if k not in ("export_id", "path", "cutoff")} == {
        k: v for k, v in local.items() if k not in ("export_id", "path", "cutoff")
    }

    # Analysts: pandas and Polars read the hive-partitioned readings from S3 as they are.
    fs, base = fs_of(remote["path"])
    frame = pd.read_parquet(f"{base}/readings", filesystem=fs)
    assert len(frame) == 9 and set(frame["type"].astype(str)) == {"heart-rate", "step-count"}
    polars = pytest.importorskip("polars")
    pl_frame = polars.scan_parquet(
        f"{remote['path']}/readings/**/*.parquet", hive_partitioning=True
    ).collect()
    assert pl_frame.height == 9
    # DuckDB: through a pyarrow dataset (httpfs would have to be downloaded).
    hive = ds.HivePartitioning.discover(infer_dictionary=True)
    readings = ds.dataset(f"{base}/readings", filesystem=fs, partitioning=hive)  # noqa: F841
    n, subjects = duckdb.connect().execute(
        "SELECT count(*), count(DISTINCT pseudonym) FROM readings"
    ).fetchone() or (0, 0)
    assert (n, subjects) == (9, 3)


def test_a_failed_export_on_s3_leaves_no_object(
    db_url: str,
    conn: psycopg.Connection,
    people: list[Subject],
    master_key: bytes,
    s3_export_dir: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(root: object, manifest: dict[str, Any]) -> None:
        raise OSError("bucket full")

    monkeypatch.setattr(flows.export, "write_manifest", broken)
    with pytest.raises(OSError, match="bucket full"):
        run_export(db_url, master_key, s3_export_dir, "EU")
    assert objects(s3_export_dir) == []
    assert conn.execute("SELECT count(*) FROM exports").fetchone() == (0,)


def test_purge_rewrites_objects_and_manifest_on_s3(
    db_url: str,
    conn: psycopg.Connection,
    people: list[Subject],
    master_key: bytes,
    s3_export_dir: str,
    cli_env: dict[str, str],
) -> None:
    from core.outputs import pseudonym

    e = run_export(db_url, master_key, s3_export_dir, "EU")
    salt = export_salt(conn, master_key, e["export_id"])
    gone, kept = people[0], people[1]
    assert pseudonym(salt, gone.subject_id) in {row[0] for row in s3_rows(e["path"])}
    receipt = erasure.erase_subject(db_url, master_key, gone.subject_id, "dpo")
    assert receipt["status"] == "pending_purge"

    # The manifest gone (an incomplete output): the purge fails loudly, nothing changes.
    fs, base = fs_of(e["path"])
    before = {rel: fs.get_file_info(f"{base}/{rel}").mtime for rel in objects(e["path"])}
    with fs.open_input_stream(f"{base}/{MANIFEST}") as f:
        manifest_bytes = f.read()
    fs.delete_file(f"{base}/{MANIFEST}")
    result = purge_exports(db_url, master_key, actor="test")
    assert result["status"] == "failed" and MANIFEST in result["failed"][0]["error"]
    assert {rel: fs.get_file_info(f"{base}/{rel}").mtime for rel in objects(e["path"])} == {
        k: v for k, v in before.items() if k != MANIFEST
    }
    with fs.open_output_stream(f"{base}/{MANIFEST}") as out:
        out.write(manifest_bytes)

    # `vitals export purge` (the CLI, settings from the environment) purges on S3.
    r = subprocess.run(
        [str(VITALS), "export", "purge"],
        env=cli_env | {"VITALS_EXPORT_DIR": s3_export_dir},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    out = orjson.loads(r.stdout)
    assert out["status"] == "done" and out["exports_purged"][0]["rows_removed"] == 3
    manifest = check_complete(e["path"])
    assert manifest["purged_at"] is not None and manifest["rows"]["readings"] == 6
    left = {row[0] for row in s3_rows(e["path"])}
    assert pseudonym(salt, gone.subject_id) not in left
    assert pseudonym(salt, kept.subject_id) in left
    receipt = erasure.erase_subject(db_url, master_key, gone.subject_id, "dpo")
    assert receipt["status"] == "complete"


# Audiences, disclosures, statistics ----------------------------------------------


@pytest.fixture
def world(conn: psycopg.Connection, master_key: bytes) -> World:
    return build_world(conn, master_key, n=24)


def test_audience_disclosure_statistics_on_s3(
    db_url: str,
    world: World,
    master_key: bytes,
    s3_export_dir: str,
    tmp_path: Path,
    cli_env: dict[str, str],
) -> None:
    # An audience through the CLI: VITALS_EXPORT_DIR is the URL.
    r = subprocess.run(
        [str(VITALS), "flows", "run", "audience", "--group", GROUP],
        env=cli_env | {"VITALS_EXPORT_DIR": s3_export_dir},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr
    own = orjson.loads(r.stdout)
    assert own["path"] == f"{s3_export_dir}/audiences/{own['audience_id']}"
    check_complete(own["path"])
    fs, base = fs_of(own["path"])
    members = pq.read_table(f"{base}/members.parquet", filesystem=fs)["member"].to_pylist()
    assert set(members) == world.audience(GROUP) and own["members"] == len(members)

    partner = world.partner_id("A")
    theirs = run_audience(db_url, master_key, s3_export_dir, GROUP, partner)
    manifest = check_complete(theirs["path"])
    assert manifest["partner_id"] == partner
    members = pq.read_table(f"{fs_of(theirs['path'])[1]}/members.parquet", filesystem=fs)
    assert set(members["member"].to_pylist()) == {
        world.pseudonym("A", sid) for sid in world.audience(GROUP, "A")
    }

    remote = run_disclosure(db_url, master_key, s3_export_dir, partner)
    local = run_disclosure(db_url, master_key, tmp_path, partner)
    assert remote["path"].startswith(f"{s3_export_dir}/disclosures/")
    check_complete(remote["path"])
    assert s3_rows(remote["path"]) == local_rows(local["path"]) != Counter()

    remote = run_statistics(db_url, s3_export_dir, "EU", min_subjects=2, period="week")
    local = run_statistics(db_url, tmp_path, "EU", min_subjects=2, period="week")
    manifest = check_complete(remote["path"])
    assert remote["path"].startswith(f"{s3_export_dir}/statistics/")
    assert manifest["suppressed_cells"] == remote["suppressed_cells"]
    fs, base = fs_of(remote["path"])
    cells = pq.read_table(f"{base}/statistics.parquet", filesystem=fs)
    assert cells.num_rows == remote["cells"] > 0
    assert (
        cells.to_pylist() == pq.read_table(Path(local["path"]) / "statistics.parquet").to_pylist()
    )


def test_readme_s3_examples_run_on_real_outputs(
    db_url: str, world: World, master_key: bytes, s3_export_dir: str
) -> None:
    """The README's pandas, Polars and DuckDB (via pyarrow) examples, as written."""
    export = run_export(db_url, master_key, s3_export_dir, "EU")
    audience = run_audience(db_url, master_key, s3_export_dir, GROUP)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Outputs on object storage (S3)", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 3
    for block in blocks:
        namespace: dict[str, Any] = {"EXPORT": export["path"], "AUDIENCE": audience["path"]}
        exec(block, namespace)  # noqa: S102 (our own README)
        readings = namespace["readings"]  # a pyarrow dataset (for DuckDB) or a frame
        rows = readings.count_rows() if isinstance(readings, ds.Dataset) else len(readings)
        assert rows == export["rows"] > 0
        if "members" in namespace:
            assert len(namespace["members"]) == audience["members"]


def test_s3_server_env_is_what_the_flows_use(s3: S3Server) -> None:
    """The fixture's bucket is reachable through the standard variables alone."""
    fs, base = fs_of(s3.url("probe"))
    assert fs.get_file_info(s3.bucket).type == pafs.FileType.Directory


def test_the_export_root_is_visible_where_the_bucket_is_reachable(
    s3: S3Server, tmp_path: Path
) -> None:
    """`POST /v1/exports/purge` purges itself where it sees the root (`visible`)."""
    from core.outputs import visible

    assert visible(s3.url("not/yet/written"))
    assert not visible("s3://no-such-bucket-here/prefix")
    assert not visible(tmp_path / "not-mounted")
    assert visible(tmp_path)
