"""`make run`'s supervision: supervisord (the `supervisor` package) runs the farm's processes in the foreground.

    python scripts/supervise.py run --data-dir DIR [--workers N] [--redis HOST:PORT]
        write DIR/supervisord.conf and run supervisord with it until Ctrl-C (SIGINT or SIGTERM), which stops every
        process; exits 1 with the process's last line when one of them keeps exiting at start
    python scripts/supervise.py config ...   the same options: print the configuration instead
    python scripts/supervise.py watch --report FILE   the event listener supervisord starts (not for people)

Each process's output goes to this terminal. A process that exits is started again by supervisord (`autorestart`),
and supervisord logs each exit and start. One that exits within its `startsecs` is retried with a growing back-off
(1 s, 2 s, 3 s); after `startretries` such tries it is FATAL, and the watcher (a supervisord event listener) records
the process's last output line and stops the farm instead of leaving it running without that process.
`supervisorctl -c DIR/supervisord.conf status` shows the processes; `... restart worker1` restarts one.
"""

from __future__ import annotations

import argparse
import configparser
import io
import os
import pwd
import secrets
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parent.parent
FATAL_REPORT = "fatal"  # in the data directory: "<process>\t<its last line>", written by the watcher

# Seconds a process must stay up to count as started, and tries before it is FATAL. A worker loads its model before
# it serves (a first download of XTTS-v2 takes minutes, and stays "starting" meanwhile); one that fails to load does
# so within a minute (a missing licence agreement, no network, a bad checkpoint).
START_SECONDS = {"redis": 1, "api": 10, "worker": 60, "flower": 5}
START_RETRIES = 3
# Stop order is the reverse: Flower, the workers (they hand their segments back through Redis), the API, Redis.
PRIORITY = {"redis": 10, "api": 100, "worker": 200, "flower": 300}
LOG_TAIL_CHARS = 4096


def _escape(value: str) -> str:
    """A value as supervisord reads it: it expands %(name)s in most options, so a literal % is doubled."""
    return value.replace("%", "%%")


def _command(*words: str) -> str:
    return _escape(shlex.join(words))


def visible_gpus(env: Mapping[str, str]) -> list[str]:
    """The GPUs a worker may be pinned to: those CUDA_VISIBLE_DEVICES lists, else every GPU `nvidia-smi` sees."""
    if "CUDA_VISIBLE_DEVICES" in env:
        listed = env["CUDA_VISIBLE_DEVICES"].split(",")
    else:
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        listed = out.split()
    return [gpu.strip() for gpu in listed if gpu.strip() and gpu.strip() != "-1"]


def worker_environments(n: int, env: Mapping[str, str], cores: int) -> list[dict[str, str]]:
    """What each of n worker processes gets besides the farm's environment: with GPUs, one GPU each (round robin);
    unless NUM_THREADS is set, an equal share of the machine's cores for its torch threads."""
    gpus = visible_gpus(env)
    extra: list[dict[str, str]] = []
    for i in range(n):
        own: dict[str, str] = {}
        if gpus:
            own["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        if n > 1 and "NUM_THREADS" not in env:
            own["NUM_THREADS"] = str(max(1, cores // n))
        extra.append(own)
    return extra


def _program(config: configparser.RawConfigParser, name: str, kind: str, command: str, **options: str) -> None:
    config[f"program:{name}"] = {
        "command": command,
        "directory": _escape(str(ROOT)),
        "priority": str(PRIORITY[kind]),
        "autostart": "true",
        "autorestart": "true",
        "startsecs": str(START_SECONDS[kind]),
        "startretries": str(START_RETRIES),
        # The whole process group: gunicorn's workers with their master, anything a script started.
        "stopasgroup": "true",
        "killasgroup": "true",
        # Every line to this terminal, and to the watcher, which keeps each process's last one.
        "redirect_stderr": "true",
        "stdout_logfile": "/dev/stdout",
        "stdout_logfile_maxbytes": "0",
        "stdout_events_enabled": "true",
        **options,
    }


def build_config(data_dir: Path, workers: int, redis: tuple[str, int] | None, env: Mapping[str, str]) -> str:
    from shared.settings import get_settings  # validates every setting: a bad one stops here with its line

    settings = get_settings()
    data = _escape(str(data_dir))
    config = configparser.RawConfigParser()
    config["supervisord"] = {
        "nodaemon": "true",  # in the foreground, its own log lines on this terminal as well as in the file
        "logfile": f"{data}/supervisord.log",
        "pidfile": f"{data}/supervisord.pid",
        "childlogdir": data,
        "loglevel": "info",
    }
    if os.geteuid() == 0:  # as root, supervisord warns unless told that root is meant
        config["supervisord"]["user"] = pwd.getpwuid(0).pw_name
    # supervisorctl's socket: only this user may open it, and it asks for this run's password (in this file, which
    # only this user may read).
    socket_path = f"{data}/supervisor.sock"
    password = secrets.token_urlsafe(18)
    config["unix_http_server"] = {"file": socket_path, "chmod": "0700", "username": "make-run", "password": password}
    config["supervisorctl"] = {"serverurl": f"unix://{socket_path}", "username": "make-run", "password": password}
    rpc = "supervisor.rpcinterface:make_main_rpcinterface"
    config["rpcinterface:supervisor"] = {"supervisor.rpcinterface_factory": rpc}

    if redis:
        host, port = redis
        redis_dir = data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        # Append-only file in the data directory: the queue, the audio streams and the Redis epoch survive a restart
        # of this Redis (a crash loses nothing the kernel has; fsync every second bounds a power cut's loss).
        redis_command = _command(
            "redis-server",
            *("--port", str(port), "--bind", host, "--dir", str(redis_dir)),
            *("--appendonly", "yes", "--appendfsync", "everysec", "--save", ""),
        )
        _program(config, "redis", "redis", redis_command, stopwaitsecs="30")

    venv = Path(sys.executable).parent
    # gunicorn lets open streams run SHUTDOWN_GRACE_SECONDS after SIGTERM, then waits 10 s more for them to close.
    api_stop = str(int(settings.SHUTDOWN_GRACE_SECONDS) + 15)
    api_command = _command(str(venv / "gunicorn"), "-c", "gunicorn.conf.py", "api.wsgi:app")
    _program(config, "api", "api", api_command, stopwaitsecs=api_stop)

    cores = os.cpu_count() or 1
    for i, extra in enumerate(worker_environments(workers, env, cores), start=1):
        name = f"worker{i}"
        # A Celery node name of its own (worker1@host, ...): the registry, Flower and pings tell them apart.
        command = _command(str(venv / "celery"), "-A", "workers.celery_app", "worker", "-n", f"{name}@%h", "-l", "INFO")
        options = {"stopwaitsecs": "60"}  # a stopped worker hands its segments back at their next chunk
        if extra:
            options["environment"] = _escape(",".join(f'{key}="{value}"' for key, value in extra.items()))
        _program(config, name, "worker", command, **options)

    _program(config, "flower", "flower", _command(str(ROOT / "scripts" / "flower.sh")), stopwaitsecs="10")

    report = data_dir / FATAL_REPORT
    config["eventlistener:watch"] = {
        "command": _command(sys.executable, str(Path(__file__).resolve()), "watch", "--report", str(report)),
        "directory": _escape(str(ROOT)),
        "events": "PROCESS_STATE_FATAL,PROCESS_LOG",
        # Every output chunk of every process is an event; a full buffer would drop some (and log each drop).
        "buffer_size": "4096",
        "autorestart": "true",
        "stderr_logfile": "/dev/stderr",
        "stderr_logfile_maxbytes": "0",
        "stdout_logfile": "NONE",
    }
    out = io.StringIO()
    config.write(out)
    return out.getvalue()


# --- the watcher: supervisord's event listener -------------------------------------------------------------------


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(it printed nothing)"


def _headers(line: str) -> dict[str, str]:
    return dict(word.split(":", 1) for word in line.split())


def watch(report: Path, stdin: TextIO, stdout: TextIO) -> None:
    """Speak supervisord's event-listener protocol: keep the tail of each process's output, and when a process
    goes FATAL (it kept exiting at start), write its name and last line to `report` and stop supervisord."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # supervisord stopping the farm: not a failure
    tails: dict[str, str] = {}
    while True:
        stdout.write("READY\n")
        stdout.flush()
        envelope = _headers(stdin.readline())
        payload = stdin.read(int(envelope["len"]))
        header_line, _, data = payload.partition("\n")
        headers = _headers(header_line)
        name = headers.get("processname", "?")
        if envelope["eventname"].startswith("PROCESS_LOG"):
            tails[name] = (tails.get(name, "") + data)[-LOG_TAIL_CHARS:]
        elif envelope["eventname"] == "PROCESS_STATE_FATAL" and not report.exists():
            line = last_line(tails.get(name, ""))
            report.write_text(f"{name}\t{line}\n")
            print(f"supervise: {name} keeps exiting at start; stopping the farm", file=sys.stderr, flush=True)
            os.kill(os.getppid(), signal.SIGTERM)  # supervisord stops every process, as on Ctrl-C
        stdout.write("RESULT 2\nOK")
        stdout.flush()


# --- command line ---------------------------------------------------------------------------------------------------


def _redis_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


def run(data_dir: Path, config_text: str) -> int:
    from supervisor import supervisord

    conf = data_dir / "supervisord.conf"
    conf.touch(mode=0o600)
    conf.chmod(0o600)
    conf.write_text(config_text)
    report = data_dir / FATAL_REPORT
    report.unlink(missing_ok=True)
    supervisord.main(["-c", str(conf)])  # returns once every process has stopped
    if report.exists():
        name, _, line = report.read_text().strip().partition("\t")
        print(f"make run stopped: {name} kept exiting at start: {line}", file=sys.stderr, flush=True)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    for action in ("run", "config"):
        p = sub.add_parser(action)
        p.add_argument("--data-dir", type=Path, required=True)
        p.add_argument("--workers", type=int, default=1)
        p.add_argument("--redis", type=_redis_address, help="start Redis on HOST:PORT (nothing answered there)")
    p = sub.add_parser("watch")
    p.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.action == "watch":
        # supervisord counts an event's length in characters of UTF-8 text.
        watch(args.report, io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8"), sys.stdout)
        return 0
    if args.workers < 1:
        parser.error("--workers (WORKERS) must be at least 1")
    data_dir = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    text = build_config(data_dir, args.workers, args.redis, os.environ)
    if args.action == "config":
        print(text, end="")
        return 0
    return run(data_dir, text)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # shared.settings, run as a script from anywhere
    sys.exit(main())
