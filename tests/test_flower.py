"""Flower as `make run` and docker-compose.yml start it (scripts/flower.sh): on 127.0.0.1 only, never without
credentials."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from tools.localfarm import ROOT, Farm, RedisServer, free_port, wait_for


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port` (from the kernel's tables; state 0A is LISTEN)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, _remote, state = line.split()[1:4]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:
                found.add(address)
    return found


@pytest.fixture
def flower(redis_server: RedisServer, tmp_path: Path) -> Iterator:
    procs: list[subprocess.Popen] = []

    def start(**env: str) -> tuple[int, Path]:
        port, log = free_port(), tmp_path / f"flower-{len(procs)}.log"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
        with open(log, "wb") as out:
            procs.append(
                subprocess.Popen(
                    ["scripts/flower.sh"],
                    cwd=ROOT,
                    env={**clean, "REDIS_URL": redis_server.url, "FLOWER_PORT": str(port), **env},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        wait_for(lambda: _listening_addresses(port), 60, "Flower to listen", interval=0.2)
        return port, log

    yield start
    for proc in procs:
        os.killpg(proc.pid, 15)
        proc.wait(20)


def test_flower_listens_on_localhost_with_generated_credentials(flower) -> None:
    port, log = flower()
    assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else
    printed = next(line for line in log.read_text().splitlines() if "credentials are" in line)
    user, password = printed.split()[-1].split(":", 1)
    assert user == "admin" and len(password) >= 20
    url = f"http://127.0.0.1:{port}/api/workers"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, auth=(user, "wrong"), timeout=10).status_code == 401
    assert requests.get(url, auth=(user, password), timeout=10).status_code == 200


def test_flower_takes_the_credentials_and_address_it_is_given(flower) -> None:
    port, log = flower(FLOWER_BASIC_AUTH="ops:s3cret-enough", FLOWER_ADDRESS="0.0.0.0")
    assert _listening_addresses(port) == {"00000000"}  # told otherwise: all interfaces
    assert "credentials are" not in log.read_text()
    url = f"http://127.0.0.1:{port}/api/workers"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, auth=("ops", "s3cret-enough"), timeout=10).status_code == 200


def test_compose_requires_keys_and_keeps_flower_local() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["api"]["environment"]["API_KEYS_REQUIRED"] == "true"
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    assert services["flower"]["command"] == ["scripts/flower.sh"]
    assert all("ports" not in services[name] for name in ("redis", "postgres", "worker"))


def test_flower_lists_the_synthesis_and_cloning_tasks_that_ran_with_their_ids(
    flower, farm: Farm, speaker: str, make_audio
) -> None:
    """The workers send task events; Flower shows each task by its name with the ids it carries, and no audio."""
    port, _log = flower(REDIS_URL=farm.redis_url, FLOWER_BASIC_AUTH="ops:s3cret-enough")
    api, auth = f"http://127.0.0.1:{port}/api", ("ops", "s3cret-enough")
    assert requests.get(f"{api}/tasks", timeout=10).status_code == 401
    # Flower knows tasks from the events it hears once it listens: wait for the workers' heartbeat events first.
    wait_for(
        lambda: (
            sum(requests.get(f"{api}/workers", params={"status": "true"}, auth=auth, timeout=10).json().values()) == 2
        ),
        30,
        "Flower to hear both workers",
        interval=0.2,
    )
    body = {"text": "Flower lists this task.", "language": "en", "speaker_id": speaker, "max_new_tokens": 8}
    job_id = requests.post(farm.url("/jobs"), json=body, timeout=30).json()["id"]
    assert farm.wait_for_state(job_id, ("succeeded", "failed"))["state"] == "succeeded"
    cloned = requests.post(
        farm.url("/clone_speaker"), files={"wav_file": ("me.wav", make_audio("wav", freq=311))}, timeout=180
    )
    content_hash = cloned.json()["content_hash"]

    def listed(name: str, kwarg: str) -> dict:
        tasks = requests.get(f"{api}/tasks", auth=auth, timeout=10).json()
        return next(
            (
                t
                for t in tasks.values()
                if t["name"] == name and kwarg in (t["kwargs"] or "") and t["state"] == "SUCCESS"
            ),
            {},
        )

    synthesis = wait_for(
        lambda: listed("xtts.synthesize_segment", f"'job_id': '{job_id}'"), 30, "the synthesis task in Flower"
    )
    assert "'index': 0" in synthesis["kwargs"] and synthesis["worker"] in {
        f"w{i}@{socket.gethostname()}" for i in (1, 2)
    }
    clone = wait_for(
        lambda: listed("xtts.clone_voice", f"'content_hash': '{content_hash}'"), 30, "the cloning task in Flower"
    )
    for task in (synthesis, clone):  # ids only: the text and the audio stay in SQL and Redis
        assert len(task["args"] or "") + len(task["kwargs"]) + len(str(task["result"])) < 300, task
