"""The one-command GPU check (scripts/gpu_check.sh), rehearsed on the CPU with tiny sizes: every step runs and
writes what it writes on a GPU, so the first GPU minutes are not spent on the script's own bugs. And the wheels it
installs there (scripts/gpu_wheels.txt) are the versions the project pins."""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tools.localfarm import ROOT

STEPS = ["install", "device", "smoke", "tests", "bench"]


@pytest.mark.slow
def test_the_rehearsal_runs_every_step_and_writes_every_result(tmp_path: Path) -> None:
    results = tmp_path / "results"
    run = subprocess.run(
        [str(ROOT / "scripts" / "gpu_check.sh"), "--rehearse", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]

    summary = json.loads((results / "summary.json").read_text())
    assert summary["rehearsal"] and summary["ok"]
    assert [(s["name"], s["status"]) for s in summary["steps"]] == [(name, 0) for name in STEPS]
    assert all((results / f"{name}.log").is_file() for name in STEPS)

    assert "nothing to install" in (results / "install.log").read_text()
    device = json.loads((results / "device.json").read_text())
    assert device["torch"].startswith("2.") and device["cuda_available"] is False and device["coqui-tts"]

    smoke = json.loads((results / "smoke.json").read_text())
    assert smoke["ok"] and [r["dtype"] for r in smoke["runs"]] == ["float32", "float16"]
    for run_ in smoke["runs"]:
        assert run_["batch"]["chunks_finite"] and run_["batch"]["chunks_on_cpu"] and not run_["batch"]["errors"]
        assert run_["batch"]["segments"] > run_["batch"]["max_batch"]  # some wait for a slot, as 40 at 32 do
        assert run_["batched_vs_alone"]["tokens_identical_fraction"] == 1.0 and run_["peak_memory_mib"] > 0

    suite = ET.parse(results / "tests.xml").getroot()
    counts = suite.find("testsuite") if suite.tag == "testsuites" else suite
    assert counts is not None and int(counts.get("errors", "1")) == 0 and int(counts.get("failures", "1")) == 0
    assert int(counts.get("tests", "0")) >= 5  # the cuda-marked tests, skipped here

    bench = json.loads((results / "bench" / "latest.json").read_text())
    assert bench["failed_sections"] == [] and not bench["gpu"]["failed"]
    rows = bench["gpu"]["rows"]
    assert {(r["dtype"], r["streams"]) for r in rows} == {(d, n) for d in ("float32", "float16") for n in (1, 2)}
    for row in rows:
        assert row["errors"] == 0 and row["chunks_finite"] and row["chunks_on_cpu"]
        assert 0 < row["first_audio_p50_s"] <= row["first_audio_p95_s"] and row["aggregate_rtf"] > 0
        assert 0 <= row["streams_without_stall"] <= row["streams"]
    assert set(bench["gpu"]["most_streams_without_stall"]) == {"float32", "float16"}
    assert (results / "bench" / "latest.md").read_text().startswith("### GPU")


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        found = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if found:
            pins[found.group(1).lower().replace("_", "-")] = found.group(2)
    return pins


def test_the_gpu_wheels_are_the_pinned_versions() -> None:
    wheels = _pins(ROOT / "scripts" / "gpu_wheels.txt")
    pinned: dict[str, str] = {}
    for requirements in ROOT.glob("requirements*.txt"):
        pinned.update(_pins(requirements))
    shared = set(wheels) & set(pinned)
    assert {"coqui-tts", "torchcodec", "pydantic", "pydantic-settings", "redis", "pytest"} <= shared
    assert {name: wheels[name] for name in shared} == {name: pinned[name] for name in shared}
