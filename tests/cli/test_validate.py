"""`vitals validate` on the whole Open mHealth corpus of the nine types, as a
user runs it: one JSON line per data point, exit 1 if any is invalid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.unit.test_corpus import FILES, _data_point


def validate(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    return subprocess.run(
        [sys.executable, "-m", "cli", "validate", *args],
        env=env,
        input=stdin,
        capture_output=True,
        timeout=60,
    )


def test_validate_classifies_the_whole_corpus(tmp_path: Path) -> None:
    points = [_data_point(p) for p in FILES]
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text("".join(json.dumps(p) + "\n" for p in points))
    r = validate(str(jsonl))
    assert r.returncode == 1  # the corpus holds invalid data points
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == len(FILES) == 191
    for path, line in zip(FILES, lines, strict=True):
        expected = "valid" if path.parent.name == "shouldPass" else "invalid"
        assert line["status"] == expected, (path, line)
        assert (
            line["id"] == f"corpus-{path.parent.parent.parent.name}-"
            f"{path.parent.parent.name}-{path.stem}"
        )
        if expected == "invalid":
            assert line["reason"] == "invalid_schema" and line["detail"]


def test_validate_one_point_an_array_and_stdin(tmp_path: Path) -> None:
    good = [_data_point(p) for p in FILES if p.parent.name == "shouldPass"][:3]
    one = tmp_path / "one.json"
    one.write_text(json.dumps(good[0]))
    assert validate(str(one)).returncode == 0
    r = validate("-", stdin=json.dumps(good).encode())
    assert r.returncode == 0
    assert [json.loads(x)["status"] for x in r.stdout.splitlines()] == ["valid"] * 3
    broken = validate("-", stdin=b'{"header": {}}\nnot json\n')
    assert broken.returncode == 1
    assert [json.loads(x)["reason"] for x in broken.stdout.splitlines()] == [
        "invalid_schema",
        "invalid_schema",
    ]
    assert validate(str(tmp_path / "missing.json")).returncode == 1
