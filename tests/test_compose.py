"""docker-compose.yml (and the GPU switch, docker-compose.gpu.yml) as Debian's Compose reads it, and the Dockerfile:
valid, no password in the files, health checks, no root, and every command, module and file they name exists.

Validation runs `docker-compose config` (Debian's docker-compose 1.29, installed by `make test` through
scripts/system_deps.sh --compose), which checks the file against the Compose schema and resolves variables without
a Docker daemon.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tools.localfarm import ROOT

BASE = ["-f", "docker-compose.yml"]
GPU = [*BASE, "-f", "docker-compose.gpu.yml"]
PASSWORD = "pw-from-the-environment-7"
BUILT_STAGES = {"api": "requirements-api.txt", "worker": "requirements.txt"}
# Programs of other images that the file runs (in those images, not ours).
THEIR_PROGRAMS = {"redis": {"redis-server", "redis-cli"}, "postgres": {"pg_isready"}}


def compose(files: list[str], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: run scripts/system_deps.sh --compose (make test does)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "COMPOSE_", "WORKER_REPLICAS"))}
    return subprocess.run(
        [binary, *files, *args],
        check=False,
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def resolved(files: list[str], **env: str) -> dict:
    result = compose(files, "config", POSTGRES_PASSWORD=PASSWORD, **env)
    assert result.returncode == 0, result.stderr
    loaded: dict = yaml.safe_load(result.stdout)
    return loaded


@pytest.mark.parametrize("files", [BASE, GPU], ids=["cpu", "gpu"])
def test_compose_validates(files: list[str]) -> None:
    result = compose(files, "config", "-q", POSTGRES_PASSWORD=PASSWORD)
    assert result.returncode == 0, result.stderr


def test_the_database_password_comes_from_the_environment_only() -> None:
    refused = compose(BASE, "config", "-q")
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr
    services = resolved(BASE)["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == PASSWORD
    for name in ("migrate", "api", "worker", "flower"):
        assert f"xtts:{PASSWORD}@postgres:5432/xtts" in services[name]["environment"]["DATABASE_URL"]
    text = (ROOT / "docker-compose.yml").read_text()
    literal = re.search(r"^\s+POSTGRES_PASSWORD:\s*+(?!\$\{POSTGRES_PASSWORD:\?)", text, re.M)
    assert literal is None, "a password written in docker-compose.yml"


def test_every_service_is_checked_and_started_in_order() -> None:
    services = resolved(BASE)["services"]
    for name, service in services.items():
        if name == "migrate":  # one-shot: the others wait for it to complete successfully
            assert service["restart"] == "no" and "healthcheck" not in service
            continue
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["worker"]["healthcheck"]["test"] == ["CMD", "python", "-m", "workers.healthcheck"]  # Celery ping
    # The API container stays healthy while workers restart: /health is 503 without one, /health/api is not.
    assert services["api"]["healthcheck"]["test"][-1].endswith("/health/api")
    assert services["api"]["command"][0] == "gunicorn"  # the production WSGI server
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes" and "--maxmemory" in redis
    assert redis[redis.index("--maxmemory-policy") + 1] == "noeviction"  # never drop queued work silently


def test_workers_scale_and_the_gpu_switch_gives_them_the_gpus() -> None:
    assert resolved(BASE, WORKER_REPLICAS="3")["services"]["worker"]["deploy"]["replicas"] == 3
    worker = resolved(BASE)["services"]["worker"]
    assert "ports" not in worker and "container_name" not in worker  # replicas must not collide
    gpu = resolved(GPU)["services"]["worker"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    ]
    assert gpu["command"] == ["scripts/gpu_workers.sh"]
    assert "scripts/gpu_workers.sh --nodes" in gpu["healthcheck"]["test"][1]


def _dockerfile_stages() -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        found = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.I)
        if found:
            current = found.group(1) or ""
            stages[current] = []
        elif line.strip() and not line.lstrip().startswith("#"):
            stages[current].append(line.strip())
    return stages


def test_no_container_runs_as_root() -> None:
    stages = _dockerfile_stages()
    for stage in BUILT_STAGES:
        users = [line.split()[1] for line in stages[stage] if line.upper().startswith("USER ")]
        assert users and users[-1] not in ("root", "0"), f"stage {stage} runs as root"
    for name, service in resolved(BASE)["services"].items():
        if "image" in service:
            assert service.get("user") not in (None, "root", "0"), f"{name} runs as root"
        else:
            assert service["build"]["target"] in BUILT_STAGES


def _module_exists(module: str) -> bool:
    path = ROOT / module.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _check_command(words: list[str], programs: set[str], where: str) -> None:
    """Each program, script, module and file a command names exists in the project (or is a program its image has)."""
    program = words[0]
    if "/" in program:
        assert (ROOT / program).is_file() and os.access(ROOT / program, os.X_OK), f"{where}: {program}"
    else:
        assert program in programs, f"{where}: {program} is not installed in that image"
    for flag, value in itertools.pairwise(words):
        if flag == "-m" or (flag == "-A" and program == "celery"):
            assert _module_exists(value), f"{where}: no module {value}"
        if flag == "-c" and program == "gunicorn":
            assert (ROOT / value).is_file(), f"{where}: no {value}"
    for word in words[1:]:
        if re.fullmatch(r"(scripts|workers|api|shared|tools)/[\w./-]+", word):
            assert (ROOT / word).is_file(), f"{where}: no file {word}"
        if found := re.fullmatch(r"([a-z_]+(?:\.[a-z_]+)+):([a-z_]+)", word):  # a WSGI application
            module, attribute = found.groups()
            assert _module_exists(module), f"{where}: no module {module}"
            assert re.search(rf"^{attribute}\s*=", (ROOT / (module.replace(".", "/") + ".py")).read_text(), re.M)
    if program == "alembic":
        assert (ROOT / "alembic.ini").is_file() and (ROOT / "migrations" / "env.py").is_file()


def _programs_of(requirements: str) -> set[str]:
    """Console scripts of the packages pinned (directly or through -r) in a requirements file, and python."""
    text = ""
    pending = [requirements]
    while pending:
        content = (ROOT / pending.pop()).read_text()
        text += content
        pending += re.findall(r"^-r\s+(\S+)", content, re.M)
    pinned = {line.split("==")[0].lower() for line in text.splitlines() if "==" in line}
    return {"python", "bash"} | {p for p in ("celery", "gunicorn", "alembic", "flower") if p in pinned}


def _words(test: list[str] | str) -> list[list[str]]:
    if isinstance(test, str):
        return [test.split()]
    if test[0] == "CMD":
        return [test[1:]]
    if test[0] == "CMD-SHELL":  # a shell line: check each command of it, $(...) included
        return [part.split() for part in re.split(r"\$\(|\)|&&|\|\||;", test[1].replace("$$", "$")) if part.strip()]
    return [test]


@pytest.mark.parametrize("files", [BASE, GPU], ids=["cpu", "gpu"])
def test_every_command_module_and_file_named_exists(files: list[str]) -> None:
    config = resolved(files)
    services = config["services"]
    for name, service in services.items():
        if "build" in service:
            assert (ROOT / service["build"]["context"]).is_dir()
            assert service["build"]["target"] in _dockerfile_stages()
            programs = _programs_of(BUILT_STAGES[service["build"]["target"]])
        else:
            programs = THEIR_PROGRAMS[name]
        commands = [service["command"]] if "command" in service else []
        if "healthcheck" in service:
            commands += _words(service["healthcheck"]["test"])
        for words in commands:
            _check_command(list(words), programs, f"{name}: {' '.join(words)}")
    for volume in (v for s in services.values() for v in s.get("volumes", [])):
        source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
        assert source in config["volumes"], f"undeclared volume {source}"


def test_every_file_the_dockerfile_names_exists() -> None:
    stages = _dockerfile_stages()
    assert set(BUILT_STAGES) <= set(stages)
    for stage, lines in stages.items():
        for line in lines:
            if line.upper().startswith("COPY ") and "--from" not in line:
                for source in line.split()[1:-1]:
                    assert source == "." or (ROOT / source).exists(), f"{stage}: COPY {source}"
            if line.upper().startswith("CMD "):
                words = yaml.safe_load(line[4:])
                _check_command(words, _programs_of(BUILT_STAGES[stage]), f"Dockerfile {stage}")
    ignored = (ROOT / ".dockerignore").read_text().split()
    for needed in ("scripts", "workers", "api", "shared", "migrations", "alembic.ini", "gunicorn.conf.py"):
        assert needed not in ignored and Path(ROOT / needed).exists()
