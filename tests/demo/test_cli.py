"""`vitals demo` without the optional `demo` dependencies says so and exits 2."""

from __future__ import annotations

import pytest

import demo.extra
from cli import main


def test_missing_extra_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo.extra, "missing_dependencies", lambda: ["matplotlib"])
    assert main(["demo"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "`demo` dependencies (not installed: matplotlib)" in err
    assert "vitals[demo]" in err


def test_the_demo_extra_is_installed_in_the_dev_venv() -> None:
    assert demo.extra.missing_dependencies() == []
