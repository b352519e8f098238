"""The benchmark runner (`make bench`): a failing section is reported and the others still run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import run


def test_a_failing_section_is_reported_and_the_others_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[str] = []

    def broken(quick: bool) -> Any:
        ran.append("streaming")
        raise RuntimeError("Expected all tensors to be on the same device")

    def working(quick: bool) -> Any:
        ran.append("formats")
        return "Formats", [{"format": "wav", "first_bytes_ms": 1.0}], {"notes": ["fine"]}

    monkeypatch.setitem(run.RUNNERS, "streaming", broken)
    monkeypatch.setitem(run.RUNNERS, "formats", working)
    status = run.main(["--only", "streaming", "formats", "--out", str(tmp_path)])

    assert status == 1
    assert ran == ["streaming", "formats"]
    results = json.loads((tmp_path / "latest.json").read_text())
    assert results["failed_sections"] == ["streaming"]
    assert results["streaming"]["failed"] and "same device" in results["streaming"]["error"]
    assert "RuntimeError" in results["streaming"]["traceback"]
    assert not results["formats"]["failed"] and results["formats"]["rows"][0]["format"] == "wav"
    report = (tmp_path / "latest.md").read_text()
    assert "streaming: FAILED" in report and "| formats | " not in report and "### Formats" in report
    assert "FAILED sections: streaming" in capsys.readouterr().err


def test_all_sections_passing_exit_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(run.RUNNERS, "formats", lambda quick: ("Formats", [{"a": 1}], {}))
    assert run.main(["--only", "formats", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "latest.json").read_text())["failed_sections"] == []
