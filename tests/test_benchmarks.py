"""The benchmark runner (`make bench`): a failing section is reported and the others still run."""

from __future__ import annotations

import importlib.util
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

    monkeypatch.setattr(run, "runner", {"streaming": broken, "formats": working}.__getitem__)
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
    monkeypatch.setattr(run, "runner", {"formats": lambda quick: ("Formats", [{"a": 1}], {})}.__getitem__)
    assert run.main(["--only", "formats", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "latest.json").read_text())["failed_sections"] == []


def test_a_section_whose_module_cannot_be_imported_fails_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU machine lacks the WebSocket client the agents section imports: that section fails, reported, and the
    others are not kept from running (each module is imported when its section runs)."""
    monkeypatch.setitem(run.RUNNERS, "agents", "no_such_bench.agents")
    real = run.runner
    monkeypatch.setattr(run, "runner", lambda name: real(name) if name == "agents" else lambda quick: ("F", [], {}))
    assert run.main(["--only", "agents", "formats", "--out", str(tmp_path)]) == 1
    results = json.loads((tmp_path / "latest.json").read_text())
    assert results["failed_sections"] == ["agents"] and "ModuleNotFoundError" in results["agents"]["error"]
    assert not results["formats"]["failed"]
    modules = {spec.split(".")[0] for name, spec in run.RUNNERS.items() if name != "agents"}
    assert all(importlib.util.find_spec(f"benchmarks.{m}") for m in modules)  # the others name modules that exist


def test_the_real_time_listener_stalls_only_when_its_audio_runs_out() -> None:
    from benchmarks.listener import stall_seconds

    # First audio at 1 s (2 s of it): playing until 3 s. Next at 2.5 s (in time, until 4 s), then at 5 s: 1 s stall.
    assert stall_seconds([(1.0, 2.0), (2.5, 1.0), (5.0, 1.0), (5.5, 0.0)]) == 1.0
    assert stall_seconds([(0.5, 1.0), (1.5, 1.0), (2.5, 1.0)]) == 0.0  # each chunk arrives as the last one ends
    assert stall_seconds([(0.2, 0.0), (3.0, 1.0)]) == 0.0  # waiting for the first audio is not a stall
    # After a stall, playback resumes as the late chunk arrives: 1 s of stall at 3 s, then 0.5 s at 4.5 s.
    assert stall_seconds([(1.0, 1.0), (3.0, 1.0), (4.5, 1.0)]) == 1.5


def test_the_books_benchmark_book_is_as_long_as_it_says_in_five_chapters() -> None:
    from benchmarks.books_bench import BOOK_CHARACTERS, book_markdown
    from shared.documents import read_document

    document = read_document(book_markdown(BOOK_CHARACTERS).encode(), "markdown")
    assert [c.title for c in document.chapters] == [f"Chapter {n}" for n in range(1, 6)]
    assert BOOK_CHARACTERS <= document.characters < BOOK_CHARACTERS * 1.05
