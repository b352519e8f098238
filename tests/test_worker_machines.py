"""More GPUs and more machines: scripts/gpu_workers.sh starts one worker per visible GPU, each pinned to its device;
the containers' health checks (a Celery ping of the worker nodes, an HTTP probe) answer for what they check.

There is no GPU here: a stand-in `nvidia-smi` on PATH plays the host's driver listing its GPUs (the only part of a
GPU the script looks at); the workers it starts are real, and run on the CPU.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tools.localfarm import ROOT, Farm, free_port, wait_for

SCRIPT = str(ROOT / "scripts" / "gpu_workers.sh")


def fake_gpus(tmp_path: Path, count: int) -> dict[str, str]:
    """An environment whose `nvidia-smi --query-gpu=index --format=csv,noheader` lists `count` GPUs."""
    bin_dir = tmp_path / f"bin-{count}-gpus"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + "".join(f"echo {i}\n" for i in range(count)))
    smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "NUM_THREADS")}
    return {**env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False)


def test_one_worker_per_visible_gpu_each_pinned_to_its_device(tmp_path: Path) -> None:
    env = fake_gpus(tmp_path, 3)
    lines = run(["--dry-run", "--concurrency", "16"], env).stdout.splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        assert line.startswith(f"CUDA_VISIBLE_DEVICES={i} NUM_THREADS=")
        assert f"worker -n gpu{i}@%h" in line and line.endswith("--concurrency 16")
    host = socket.gethostname()
    assert run(["--nodes"], env).stdout.split() == [f"gpu{i}@{host}" for i in range(3)]
    # CUDA_VISIBLE_DEVICES, when set, says which GPUs this machine gives the farm.
    chosen = run(["--dry-run"], {**env, "CUDA_VISIBLE_DEVICES": "2,5"}).stdout.splitlines()
    assert [line.split()[0] for line in chosen] == ["CUDA_VISIBLE_DEVICES=2", "CUDA_VISIBLE_DEVICES=5"]
    assert run(["--nodes"], {**env, "CUDA_VISIBLE_DEVICES": "2,5"}).stdout.split() == [f"gpu2@{host}", f"gpu5@{host}"]


def test_no_gpu_is_a_clear_refusal(tmp_path: Path) -> None:
    for env in (fake_gpus(tmp_path, 0), {**fake_gpus(tmp_path, 2), "CUDA_VISIBLE_DEVICES": ""}):
        result = run([], env)
        assert result.returncode == 1 and "no GPU is visible" in result.stderr and result.stdout == ""


@pytest.fixture
def worker_machine(farm_with) -> Farm:
    """A farm (Redis, SQLite, the API) without workers: the script under test brings them."""
    return farm_with(workers=0)


def test_the_gpu_workers_serve_answer_pings_and_stop_together(worker_machine: Farm, tmp_path: Path) -> None:
    env = {**worker_machine.env, **{k: v for k, v in fake_gpus(tmp_path, 2).items() if k == "PATH"}}
    env.pop("NUM_THREADS")
    with open(tmp_path / "gpu_workers.log", "wb") as log:
        script = subprocess.Popen(
            [SCRIPT], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        host = socket.gethostname()
        workers = worker_machine.wait_for_workers(2)
        assert sorted(w["node"] for w in workers) == [f"gpu0@{host}", f"gpu1@{host}"]
        assert all(w["model"]["torch_threads"] == max(1, (os.cpu_count() or 1) // 2) for w in workers)

        healthcheck = [sys.executable, "-m", "workers.healthcheck", "--timeout", "10"]
        nodes = subprocess.run([SCRIPT, "--nodes"], cwd=ROOT, env=env, capture_output=True, text=True, check=True)

        def answered() -> bool:  # the registry lists a worker as its model loads; it answers pings once it consumes
            ping = [*healthcheck, *nodes.stdout.split()]
            return subprocess.run(ping, cwd=ROOT, env=env, capture_output=True, check=False).returncode == 0

        wait_for(answered, 60, "both workers to answer the health check", interval=0.5)
        missing = subprocess.run(
            [*healthcheck, "--timeout", "2", f"gpu0@{host}", f"gpu7@{host}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert missing.returncode == 1 and f"gpu7@{host}" in missing.stderr and f"gpu0@{host}" not in missing.stderr

        # One worker dies: the script stops the other and exits, for its supervisor to restart the set.
        children = subprocess.run(["pgrep", "-P", str(script.pid)], capture_output=True, text=True, check=True)
        children = children.stdout.split()
        assert len(children) == 2
        os.kill(int(children[0]), signal.SIGKILL)
        assert script.wait(60) != 0
        wait_for(lambda: worker_machine.live_workers() == [], 30, "the other worker to leave the registry")
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGTERM)
            script.wait(30)


def test_the_http_probe_of_the_containers(worker_machine: Farm) -> None:
    probe = [sys.executable, str(ROOT / "scripts" / "http_probe.py")]
    # What docker-compose.yml probes: the API serves though this machine has no worker yet...
    assert subprocess.run([*probe, worker_machine.url("/health/api")], capture_output=True, check=False).returncode == 0
    # ...while /health says the farm cannot synthesize.
    no_worker = subprocess.run([*probe, worker_machine.url("/health")], capture_output=True, text=True, check=False)
    assert no_worker.returncode == 1 and "HTTP 503" in no_worker.stderr
    refused = subprocess.run(
        [*probe, f"http://127.0.0.1:{free_port()}/health"], capture_output=True, text=True, check=False
    )
    assert refused.returncode == 1 and "Connection refused" in refused.stderr
    missing = subprocess.run([*probe, worker_machine.url("/nothing")], capture_output=True, text=True, check=False)
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr
