"""`make run` itself (not a farm built by the tests) survives the death of its own processes: supervisord restarts a
killed worker, API or Redis while the others keep serving, listeners lose no audio, Ctrl-C stops every process, and
a process that keeps failing at start (a bad setting) stops the run with its one-line error.

Each farm here is `make run XTTS_MODEL=dev` with everything it keeps in a temporary directory: the SQLite database
and the embedded Redis's append-only file in DATA_DIR (Redis on a free port, so `make run` starts its own: the
machine's Redis is never touched), the API and Flower on free ports. The bounds: a killed worker is back in /health
within 30 s (its model loads again), a killed API serves again within 10 s.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.audio import ResumingListener, xtts_samples
from tools.localfarm import ROOT, free_port, tts_body, wait_for

SENTENCE = (
    "This sentence is long enough to be a segment of its own, because two of them together would not fit "
    "within the two hundred and fifty characters that XTTS accepts for English in one go."
)
TOKENS = 60  # per segment: about 3.5 s of synthesis each with the dev model on a loaded 2-core machine
# The main process of each program, by its command line.
PROGRAMS = {"worker1": r"celery -A workers\.celery_app worker", "api": r"gunicorn -c", "redis": r"redis-server"}
MAKE_ENV_NOISE = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "DATABASE_URL", "REDIS_URL", "WORKERS", "CUDA_VISIBLE_DEVICES")


def processes() -> list[tuple[int, list[str], str]]:
    """Every live process: (pid, the fields of /proc/PID/stat after its name, command line)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it ended meanwhile
        if fields[0] != "Z":
            found.append((int(stat.parent.name), fields, cmdline.strip()))
    return found


def session_processes(sid: int, field: int = 3) -> list[tuple[int, int, str]]:
    """Every process still alive in the session `make run` was started in (its own): (pid, parent pid, command
    line) each; with field=2, those of process group `sid` instead."""
    return [(pid, int(fields[1]), cmd) for pid, fields, cmd in processes() if int(fields[field]) == sid]


def descendants(root: int) -> list[tuple[int, int, str]]:
    """The processes below `root`: (pid, parent pid, command line) each."""
    children: dict[int, list[tuple[int, int, str]]] = {}
    for pid, fields, cmd in processes():
        children.setdefault(int(fields[1]), []).append((pid, int(fields[1]), cmd))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


class MakeRun:
    """`make run` in a session of its own, its output (every process's) collected line by line."""

    def __init__(self, tmp: Path, model_dir: Path, **settings: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.data_dir = tmp / "data"
        self.env = {k: v for k, v in os.environ.items() if k not in MAKE_ENV_NOISE}
        self.env.update(
            XTTS_MODEL="dev",
            MODEL_DIR=str(model_dir),
            PORT=str(self.port),
            FLOWER_PORT=str(free_port()),
            FLOWER_BASIC_AUTH="admin:test-password",
            REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",  # nothing answers there: make run starts its Redis
            DATA_DIR=str(self.data_dir),
            VOICES_DIR=str(tmp / "voices"),
            HOST="127.0.0.1",
            NUM_THREADS="1",
            WORKER_HEARTBEAT_SECONDS="1",
            SEGMENT_LEASE_SECONDS="4",
            REAPER_INTERVAL_SECONDS="1",
            STREAM_READ_BLOCK_MS="200",
            PYTHONUNBUFFERED="1",
            XDG_RUNTIME_DIR=str(tmp),  # where gunicorn puts its control socket (else in ~/.gunicorn)
        )
        self.env.update(settings)
        self.lines: list[str] = []
        self.log = open(tmp / "make-run.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["make", "--no-print-directory", "run"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            self.log.write(line + "\n")
            self.log.flush()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def health(self) -> requests.Response:
        return requests.get(self.url("/health"), timeout=5)

    def live_workers(self) -> list[dict[str, Any]]:
        workers: list[dict[str, Any]] = self.health().json()["workers"]
        return workers

    def pid(self, program: str) -> int:
        """The pid of `program`'s main process (gunicorn's master, Celery's main process, redis-server): the one
        process of this run whose command line matches and whose parent's does not."""
        pattern = re.compile(PROGRAMS[program])
        found = {pid: (ppid, cmd) for pid, ppid, cmd in descendants(self.proc.pid) if pattern.search(cmd)}
        mains = [pid for pid, (ppid, _) in found.items() if ppid not in found]
        assert len(mains) == 1, f"{program}: {found}"
        return mains[0]

    def logged(self, pattern: str) -> bool:
        return any(re.search(pattern, line) for line in self.lines)

    def job(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = requests.get(self.url(f"/jobs/{job_id}"), timeout=10).json()
        return body

    def finished(self, job_id: str, timeout: float) -> dict[str, Any]:
        """The job once it has ended, however it ended."""

        def ended() -> dict[str, Any]:
            job = self.job(job_id)
            return job if job["state"] in ("succeeded", "failed", "cancelled") else {}

        return wait_for(ended, timeout, "the job's end", 0.2)

    def interrupt(self, timeout: float = 120) -> int:
        """Ctrl-C: SIGINT to make's foreground process group, as a terminal sends it."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.interrupt()
        finally:
            for leftover, _, _ in session_processes(self.proc.pid):  # never leave a process behind, whatever failed
                os.kill(leftover, signal.SIGKILL)
            self.reader.join(10)
            self.log.close()


class HealthProbe:
    """GET /health five times a second until stopped, keeping every answer, and every request that got none."""

    def __init__(self, farm: MakeRun) -> None:
        self.farm = farm
        self.answers: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                response = self.farm.health()
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
                continue
            try:
                body = response.json()
            except ValueError:
                self.failures.append(f"{response.status_code} {response.text}")
                continue
            # 200 with a worker; 503 saying why while there is none; anything else is the API failing.
            expected = 200 if body.get("status") == "ok" else 503
            if response.status_code != expected or body.get("status") not in ("ok", "no_workers"):
                self.failures.append(f"{response.status_code} {response.text}")
            else:
                self.answers.append(body)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)


def submit(farm: MakeRun, segments: int, tokens: int = TOKENS) -> str:
    response = requests.post(farm.url("/jobs"), json=tts_body(" ".join([SENTENCE] * segments), tokens, 8), timeout=30)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


@pytest.fixture(scope="module")
def make_run(dev_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeRun]:
    """One `make run` farm shared by the tests below, in file order; the last one stops it with Ctrl-C."""
    farm = MakeRun(tmp_path_factory.mktemp("make-run"), dev_model_dir)
    try:
        wait_for(lambda: len(farm.live_workers()) == 1 or farm.proc.poll() is not None, 300, "make run's worker")
        assert farm.proc.poll() is None, "make run exited:\n" + "\n".join(farm.lines[-30:])
        yield farm
    finally:
        farm.stop()


@pytest.mark.farm
def test_a_killed_worker_comes_back_while_the_api_answers_and_its_listener_loses_nothing(make_run: MakeRun) -> None:
    farm = make_run
    job_id = submit(farm, segments=4)
    listener = ResumingListener(farm, job_id)
    wait_for(lambda: listener.audio, 60, "the job's first audio")
    probe = HealthProbe(farm)
    killed = farm.pid("worker1")
    os.kill(killed, signal.SIGKILL)  # what the out-of-memory killer does
    killed_at = time.monotonic()

    # Meanwhile the API answers every request: /health says there is no worker (503 with the reason), /health/api
    # that the API itself serves, and a new request gets no_workers.
    wait_for(lambda: probe.answers and probe.answers[-1]["status"] == "no_workers", 30, "/health to say no worker")
    assert "no synthesis worker" in probe.answers[-1]["reason"]
    assert requests.get(farm.url("/health/api"), timeout=5).status_code == 200
    refused = requests.post(farm.url("/jobs"), json=tts_body(SENTENCE, 10), timeout=30)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_workers", refused.text

    def restarted() -> bool:
        return any(w["pid"] != killed for w in probe.answers[-1]["workers"] or [])

    wait_for(restarted, killed_at + 30 - time.monotonic(), "a new worker in /health")
    probe.stop()
    assert probe.failures == [], "the API stopped answering"
    print(f"worker back in /health {time.monotonic() - killed_at:.1f} s after its SIGKILL")
    listener.complete(TOKENS, segments=4, timeout=180)
    assert listener.cursors == [None], "the listener's stream broke off while the worker was down"
    status = farm.finished(job_id, 60)
    assert status["state"] == "succeeded" and status["progress"]["audio_samples"] == 4 * xtts_samples(TOKENS)
    assert farm.logged(r"exited: worker1 \(terminated by SIGKILL") and farm.pid("worker1") != killed


@pytest.mark.farm
def test_a_killed_api_is_replaced_within_10_s_and_its_listener_resumes_from_its_cursor(make_run: MakeRun) -> None:
    farm = make_run
    job_id = submit(farm, segments=4)
    listener = ResumingListener(farm, job_id)
    wait_for(lambda: listener.audio, 60, "the job's first audio")
    killed = farm.pid("api")  # gunicorn's master: its worker goes with it
    os.kill(killed, signal.SIGKILL)
    killed_at = time.monotonic()

    def replaced() -> bool:  # by a new master: nothing of the killed one's process group serves any more
        return not session_processes(killed, field=2) and farm.pid("api") != killed and farm.health().status_code == 200

    wait_for(replaced, 10, "a new API process")
    print(f"a new API served {time.monotonic() - killed_at:.1f} s after the SIGKILL")
    listener.complete(TOKENS, segments=4, timeout=180)
    assert len(listener.cursors) >= 2 and all(listener.cursors[1:]), "the listener did not resume with its cursor"
    assert farm.finished(job_id, 60)["state"] == "succeeded"


@pytest.mark.farm
def test_the_embedded_redis_keeps_queued_jobs_across_its_restart(make_run: MakeRun) -> None:
    farm = make_run
    jobs = [submit(farm, segments=2) for _ in range(3)]  # one running, the others queued behind it
    wait_for(lambda: farm.job(jobs[0])["progress"]["chunks"] > 0, 60, "the first job's audio")
    killed = farm.pid("redis")
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: farm.pid("redis") != killed, 30, "supervisord to start Redis again")
    for job_id in jobs:
        status = farm.finished(job_id, 180)
        assert status["state"] == "succeeded", status
        assert status["progress"]["audio_samples"] == 2 * xtts_samples(TOKENS)
    audio = requests.get(farm.url(f"/jobs/{jobs[0]}/audio"), params={"response_format": "pcm"}, timeout=30)
    assert audio.status_code == 200 and len(audio.content) // 2 == 2 * xtts_samples(TOKENS)  # its audio kept too


@pytest.mark.farm
def test_ctrl_c_stops_every_process(make_run: MakeRun) -> None:
    farm = make_run
    farm.interrupt()
    wait_for(lambda: not session_processes(farm.proc.pid), 10, "every process of make run to end")
    for port in (farm.port, int(farm.env["FLOWER_PORT"]), int(farm.env["REDIS_URL"].rsplit(":", 1)[1].split("/")[0])):
        with socket.socket() as s:  # nothing listens any more, even a process that left the session
            assert s.connect_ex(("127.0.0.1", port)) != 0, port
    for program in ("flower", "worker1", "api", "redis"):
        assert farm.logged(rf"stopped: {program} "), program
    # What the run keeps is in its DATA_DIR: the SQLite database and Redis's append-only file.
    assert (farm.data_dir / "xtts.db").exists() and (farm.data_dir / "redis" / "appendonlydir").is_dir()


@pytest.mark.farm
@pytest.mark.parametrize(
    ("setting", "value", "line"),
    [
        # Checked by Flower's start script only: Flower exits at each start until supervisord gives up on it.
        ("FLOWER_BASIC_AUTH", "admin", "FLOWER_BASIC_AUTH must be user:password"),
        # Checked by every program of the farm: the migrations stop make run before anything starts.
        ("NUM_THREADS", "abc", "invalid setting NUM_THREADS='abc'"),
    ],
)
def test_a_bad_setting_stops_make_run_with_its_one_line_error(
    dev_model_dir: Path, tmp_path: Path, setting: str, value: str, line: str
) -> None:
    farm = MakeRun(tmp_path, dev_model_dir, WORKERS="2", **{setting: value})
    try:
        started = time.monotonic()
        status = farm.proc.wait(120)
        farm.reader.join(10)
        print(f"make run stopped {time.monotonic() - started:.1f} s after its start, with status {status}")
        assert status != 0
        last = [text for text in farm.lines if text.strip() and not text.startswith("make: ***")][-1]
        assert line in last, "\n".join(farm.lines[-20:])
        assert not session_processes(farm.proc.pid)
        if setting == "FLOWER_BASIC_AUTH":  # the farm had started: two workers, each a Celery node of its own
            assert farm.logged("spawned: 'worker1'") and farm.logged("spawned: 'worker2'")
            assert farm.logged(r"gave up: flower entered FATAL state")
    finally:
        farm.stop()


def test_workers_n_gives_each_worker_its_node_name_its_gpu_and_its_share_of_the_cores(tmp_path: Path) -> None:
    """The supervisord configuration `make run WORKERS=3` writes, on a machine that shows two GPUs."""
    env = {k: v for k, v in os.environ.items() if k not in MAKE_ENV_NOISE}
    env.pop("NUM_THREADS", None)
    env["CUDA_VISIBLE_DEVICES"] = "0,1"
    args = ["--data-dir", str(tmp_path), "--workers", "3", "--redis", "127.0.0.1:6399"]
    config = subprocess.run(
        [sys.executable, "scripts/supervise.py", "config", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    sections = dict(re.findall(r"^\[(.+?)\]\n(.*?)(?=^\[|\Z)", config, re.MULTILINE | re.DOTALL))
    workers = sorted(name for name in sections if name.startswith("program:worker"))
    assert workers == ["program:worker1", "program:worker2", "program:worker3"]
    threads = max(1, (os.cpu_count() or 1) // 3)
    for i, gpu in zip((1, 2, 3), ("0", "1", "0"), strict=True):
        section = sections[f"program:worker{i}"]
        assert f"worker -n worker{i}@%%h" in section  # %% is supervisord's escape of a literal %
        assert f'CUDA_VISIBLE_DEVICES="{gpu}"' in section and f'NUM_THREADS="{threads}"' in section
    redis = sections["program:redis"]
    assert "--port 6399" in redis and "--appendonly yes" in redis and f"--dir {tmp_path}/redis" in redis
    assert "PROCESS_STATE_FATAL" in sections["eventlistener:watch"]
