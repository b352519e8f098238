"""The suite's two tiers and the shared farms under them: the fast tier (`make test-fast`) starts no farm process,
and a shared farm handed to a test holds nothing of the test before, with only what that test broke restarted."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from shared.settings import Settings
from tests.farms import API_ONLY_SETTINGS, FarmInFastTest, SharedFarm
from tools.localfarm import ROOT, Farm, ProcessExited, free_port, tts_body, wait_for


def _collected(*args: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split("::", 1)[1] for line in out.splitlines() if "::" in line}


def _fast_tier_expression() -> str:
    """The marker expression `make test-fast` selects its tests with: the Makefile's own."""
    recipe = (ROOT / "Makefile").read_text().split("\ntest-fast:", 1)[1].split("\n\n", 1)[0]
    found = re.search(r'-m "([^"]+)"', recipe)
    assert found, f"no marker expression in the test-fast recipe: {recipe}"
    return found.group(1)


def test_the_fast_tier_leaves_out_the_tests_whose_fixtures_start_a_farm_or_load_the_model() -> None:
    """The farms the fast tier once started by mistake: the configured farm of test_settings_effect.py and the
    worker machine of test_worker_machines.py (fixtures that build on `farm_with`); and Flower. The model tests:
    those whose fixtures load it in process however indirectly (the segment time limits' `segment_run`)."""
    modules = ("settings_effect", "worker_machines", "flower", "model")
    fast = _collected("-m", _fast_tier_expression(), *(f"tests/test_{module}.py" for module in modules))
    assert "test_use_cpu_keeps_a_gpu_machine_on_the_cpu" in fast and "test_no_gpu_is_a_clear_refusal" in fast
    assert "test_compose_requires_keys_and_keeps_flower_local" in fast
    assert "test_devmodel_command_is_documented_and_idempotent" in fast
    farm_tests = {
        "test_port_the_api_listens_on",
        "test_debug_and_json_logs",
        "test_the_gpu_workers_serve_answer_pings_and_stop_together",
        "test_the_http_probe_of_the_containers",
        "test_flower_listens_on_localhost_with_generated_credentials",
    }
    model_tests = {
        "test_segment_soft_time_limit_stops_a_run_that_goes_on_too_long",
        "test_dev_checkpoint_loads_with_the_real_xtts_code_and_speaks_noise",
    }
    assert not (farm_tests | model_tests) & fast, (farm_tests | model_tests) & fast


def _farm_of_nothing(tmp_path: Path, workers: int) -> Farm:
    """A farm not started, with no Redis (port 1) and an empty SQLite file: for tests of starting it."""
    return Farm(
        redis_url="redis://127.0.0.1:1/0",
        database_url=f"sqlite:///{tmp_path / 'farm.db'}",
        model_dir=tmp_path,
        workers=workers,
        log_dir=tmp_path,
    )


def test_a_fast_test_cannot_start_a_farm_process(tmp_path: Path) -> None:
    """This test is in the fast tier (its fixtures start no farm): starting a worker or an API fails it."""
    farm = _farm_of_nothing(tmp_path, workers=1)
    with pytest.raises(FarmInFastTest, match="Celery worker"):
        farm.start_worker()
    with pytest.raises(FarmInFastTest, match="API"):
        farm.start_api()
    assert not farm.workers and farm.api is None


@pytest.mark.farm
def test_a_farm_whose_api_cannot_start_fails_at_once_with_the_api_log(tmp_path: Path) -> None:
    """Waiting for a farm stops the moment its API has exited, with the end of its log: not a minutes-long wait
    ending in "connection refused" (seen in CI before, when the API lost its port)."""
    farm = _farm_of_nothing(tmp_path, workers=0)
    with socket.socket() as taken:  # another server holds the API's port
        taken.bind(("127.0.0.1", farm.port))
        taken.listen()
        farm.start_api()
        try:
            with pytest.raises(ProcessExited, match="Connection in use"):
                farm.wait_for_workers(0, timeout=600)
        finally:
            farm.kill()


def test_free_ports_are_never_the_kernels_ephemeral_ones_nor_handed_out_twice() -> None:
    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ephemeral = range(low, high + 1)
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50 and not any(p in ephemeral for p in ports)


def test_api_only_settings_are_read_by_the_api_alone() -> None:
    """A test that changes only these gets a shared farm with its API restarted: no worker may read them."""
    assert set(Settings.model_fields) >= API_ONLY_SETTINGS
    elsewhere = [
        *(ROOT / "workers").rglob("*.py"),
        *(ROOT / "voices_store").rglob("*.py"),
        *(p for p in (ROOT / "shared").rglob("*.py") if p.name != "settings.py"),
        ROOT / "celery_config.py",
    ]
    named = {
        (str(path.relative_to(ROOT)), name)
        for path in elsewhere
        for name in API_ONLY_SETTINGS
        if re.search(rf"\b{name}\b", path.read_text())
    }
    assert not named


def _job_keys(farm: Farm, job_id: str) -> list[bytes]:
    return list(farm.redis().scan_iter(match=f"*{job_id}*"))


def test_a_reset_leaves_nothing_of_the_test_before(farm: SharedFarm) -> None:
    running = requests.post(farm.url("/jobs"), json=tts_body("Left running.", 400, chunk=5), timeout=30).json()
    wait_for(lambda: farm.job(running["id"])["progress"]["chunks"] > 0, 60, "the job to run")
    assert _job_keys(farm, running["id"])
    farm.ready({})  # what farm_with does before it hands the farm to the next test
    assert requests.get(farm.url(f"/jobs/{running['id']}"), timeout=10).status_code == 404
    assert not _job_keys(farm, running["id"])
    assert not any(w["current"] for w in farm.live_workers())
    # And the check farm_with makes before handing a farm out fails when something is left.
    requests.post(farm.url("/jobs"), json=tts_body("Left over.", 5), timeout=30).raise_for_status()
    with pytest.raises(AssertionError, match="rows of an earlier test"):
        farm.check_empty()


def test_only_the_processes_a_test_killed_are_started_again(farm: SharedFarm) -> None:
    api, (first, second) = farm.api, farm.workers.values()
    assert api is not None
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    farm.ready({})
    assert farm.api is api and api.poll() is None  # the API was left alone
    kept, started = farm.workers.values()
    assert kept is second and started.pid != first.pid and started.poll() is None
    assert sorted(w["pid"] for w in farm.wait_for_workers(2)) == sorted([second.pid, started.pid])
