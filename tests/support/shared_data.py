"""Third-party data (Open mHealth corpus, HL7 FHIR examples, realdata) lives in
`../shared`, never in this repository. `VITALS_TEST_DATA` points elsewhere.

Where it is absent a test that needs it says so and skips; with
`VITALS_TEST_DATA_REQUIRED=1` (set by `.ci/run`) it fails instead, so CI can
never go green by skipping the corpus.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def shared_root() -> Path:
    return Path(os.environ.get("VITALS_TEST_DATA") or REPO.parent / "shared")


def shared_path(relative: str) -> Path:
    """The folder `relative` under the shared data root; skip (or, when required,
    fail) the calling test module when it is not there. Call at module level."""
    path = shared_root() / relative
    if path.is_dir():
        return path
    reason = (
        f"third-party test data not found at {path}: set VITALS_TEST_DATA to the "
        "folder holding omh/, fhir/ and realdata/ (default ../shared)"
    )
    if os.environ.get("VITALS_TEST_DATA_REQUIRED") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)
