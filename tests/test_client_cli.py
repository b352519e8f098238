"""The `xtts` command line, installed from the repository (`pip install ./client`) into a fresh virtualenv, run as a
subprocess against a running farm: speech to a file and to stdout, voices, jobs with their progress bar, a stream
cut mid-way and resumed by itself, a bad key, a farm that is not there."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import requests

from tests.audio import assert_duration_matches, parse_stream_wav, read_wav, xtts_samples
from tests.books import CHAPTERS, build_epub, probe
from tools.faults import TcpProxy
from tools.localfarm import ROOT, Farm, create_api_key, free_port, wait_for

# Every test here runs the installed CLI, which takes a virtualenv build: none belongs to the fast subset.
pytestmark = pytest.mark.farm

SHORT = ["--param", "min_new_tokens=25", "--param", "max_new_tokens=25"]
# About 280 characters: two segments.
TWO_SEGMENTS = (
    "First sentence of a book read by the command line. " * 5 + "And a second paragraph, in a segment of its own."
)


@pytest.fixture(scope="session")
def xtts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `xtts` executable of a fresh virtualenv (no system site-packages) holding only `pip install ./client`."""
    venv = tmp_path_factory.mktemp("client-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(ROOT / "client")],
        check=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    return venv / "bin" / "xtts"


def run_xtts(
    xtts: Path, url: str, *args: str, key: str | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[bytes]:
    """The CLI as a user runs it: the farm and key from the environment only."""
    env = {"PATH": os.environ["PATH"], "XTTS_URL": url, **({"XTTS_API_KEY": key} if key else {})}
    return subprocess.run([str(xtts), *args], env=env, capture_output=True, timeout=timeout, check=False)


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert "Traceback" not in err
    return err


def job_of(stderr: str) -> str:
    match = re.search(r"job ([0-9a-f-]+)", stderr)
    assert match, stderr
    return match.group(1)


def job_pcm(farm: Farm, job_id: str) -> bytes:
    response = requests.get(farm.url(f"/jobs/{job_id}/audio"), headers=farm.headers, timeout=30)
    assert response.status_code == 200, response.text
    return read_wav(response.content)[2]


def test_say_to_a_wav_file_of_the_exact_length(farm: Farm, speaker: str, xtts: Path, tmp_path: Path) -> None:
    out = tmp_path / "hello.wav"
    err = ok(
        run_xtts(
            xtts, farm.base_url, "say", "Hello from the command line.", "--speaker", speaker, "-o", str(out), *SHORT
        )
    )
    status = farm.job(job_of(err))
    assert status["state"] == "succeeded"
    rate, frames, pcm = read_wav(out.read_bytes())  # the header states the real length
    assert rate == status["sample_rate"] and frames == status["progress"]["audio_samples"] > 0
    assert pcm == job_pcm(farm, status["id"])
    assert not list(tmp_path.glob("*.part"))


def test_say_to_stdout_as_wav_and_as_raw_pcm(farm: Farm, speaker: str, xtts: Path, tmp_path: Path) -> None:
    wav = run_xtts(xtts, farm.base_url, "say", "Straight to standard output.", "--speaker", speaker, *SHORT)
    fmt, pcm = parse_stream_wav(wav.stdout)
    assert (fmt["format"], fmt["channels"], fmt["rate"], fmt["bits"]) == (1, 1, 24000, 16)
    assert pcm == job_pcm(farm, job_of(ok(wav)))

    raw = run_xtts(
        xtts, farm.base_url, "say", "Raw samples, no header.", "--speaker", speaker, "-f", "pcm", "-o", "-", *SHORT
    )
    assert raw.stdout == job_pcm(farm, job_of(ok(raw)))
    by_name = run_xtts(
        xtts, farm.base_url, "say", "Told by the name.", "--speaker", speaker, "-o", str(tmp_path / "a.pcm"), *SHORT
    )
    assert (tmp_path / "a.pcm").read_bytes() == job_pcm(farm, job_of(ok(by_name)))


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac"])
def test_say_in_a_compressed_format_chosen_by_the_file_name(
    farm: Farm, speaker: str, xtts: Path, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"hello.{fmt}"
    said = run_xtts(xtts, farm.base_url, "say", "Compressed on the farm.", "--speaker", speaker, "-o", str(out), *SHORT)
    err = ok(said)
    status = farm.job(job_of(err))
    assert_duration_matches(out.read_bytes(), fmt, status["progress"]["audio_samples"])
    # Job audio too: `xtts job` fetches the finished job in the file's format.
    book = tmp_path / "book.txt"
    book.write_text("A job kept as a compressed file.", encoding="utf-8")
    job_out = tmp_path / f"book.{fmt}"
    err = ok(run_xtts(xtts, farm.base_url, "job", str(book), "--speaker", speaker, "-o", str(job_out), *SHORT))
    job_id = re.search(r"job ([0-9a-f-]+) queued", err).group(1)  # type: ignore[union-attr]
    assert_duration_matches(job_out.read_bytes(), fmt, farm.job(job_id)["progress"]["audio_samples"])


def test_voices_clone_list_use_and_delete(farm: Farm, xtts: Path, make_audio, tmp_path: Path) -> None:
    sample = tmp_path / "sample.wav"
    sample.write_bytes(make_audio("wav", seconds=3.0, freq=330))
    voice = f"cli-{uuid.uuid4().hex[:8]}"
    cloned = run_xtts(xtts, farm.base_url, "voices", "clone", str(sample), "--id", voice, "--name", "CLI voice")
    ok(cloned)
    assert f"saved voice {voice}" in cloned.stdout.decode()

    listed = run_xtts(xtts, farm.base_url, "voices", "list")
    ok(listed)
    assert f"{voice}\tCLI voice\t" in listed.stdout.decode()

    spoken = run_xtts(
        xtts, farm.base_url, "say", "In the cloned voice.", "--voice", voice, "-o", str(tmp_path / "v.wav"), *SHORT
    )
    assert farm.job(job_of(ok(spoken)))["speaker"] == {"kind": "saved", "id": voice}

    ok(run_xtts(xtts, farm.base_url, "voices", "delete", voice))
    assert voice not in run_xtts(xtts, farm.base_url, "voices", "list").stdout.decode()
    again = run_xtts(xtts, farm.base_url, "voices", "delete", voice)
    farm_says = requests.delete(farm.url(f"/saved_voices/{voice}"), timeout=10).json()["error"]
    assert again.returncode == 1
    assert again.stderr.decode() == f"xtts: error: {farm_says['message']} ({farm_says['code']}, HTTP 404)\n"


def test_job_from_a_file_with_progress_then_status(farm: Farm, speaker: str, xtts: Path, tmp_path: Path) -> None:
    book = tmp_path / "book.txt"
    book.write_text(TWO_SEGMENTS, encoding="utf-8")
    out = tmp_path / "book.wav"
    err = ok(run_xtts(xtts, farm.base_url, "job", str(book), "--speaker", speaker, "-o", str(out), *SHORT))
    job_id = re.search(r"job ([0-9a-f-]+) queued", err).group(1)  # type: ignore[union-attr]
    status = farm.job(job_id)
    assert status["state"] == "succeeded" and status["progress"]["segments_total"] == 2
    # The progress bar, on stderr: segments done of all, and seconds of audio, up to the end.
    seconds = status["progress"]["audio_seconds"]
    assert "2/2 segments" in err and f"{seconds:.1f} s of audio" in err, err
    _rate, frames, pcm = read_wav(out.read_bytes())
    assert frames == status["progress"]["audio_samples"] and pcm == job_pcm(farm, job_id)

    shown = run_xtts(xtts, farm.base_url, "jobs", "status", job_id)
    assert ok(shown) == "" and shown.stdout.decode() == (
        f"job {job_id}: succeeded, 2/2 segments, {seconds:.1f} s of audio\n"
    )


def test_jobs_cancel_and_the_audio_of_a_cancelled_job(farm: Farm, speaker: str, xtts: Path, tmp_path: Path) -> None:
    book = tmp_path / "long.txt"
    book.write_text("A long job that is cancelled before its end.", encoding="utf-8")
    submitted = run_xtts(
        xtts,
        farm.base_url,
        "job",
        str(book),
        "--speaker",
        speaker,
        "--no-follow",
        "--param",
        "min_new_tokens=400",
        "--param",
        "max_new_tokens=400",
        "--param",
        "stream_chunk_size=5",
    )
    ok(submitted)
    job_id = submitted.stdout.decode().strip()
    cancelled = run_xtts(xtts, farm.base_url, "jobs", "cancel", job_id)
    ok(cancelled)
    assert cancelled.stdout.decode().startswith(f"job {job_id}: cancelled")
    assert farm.job(job_id)["state"] == "cancelled"

    audio = run_xtts(xtts, farm.base_url, "jobs", "audio", job_id, "-o", str(tmp_path / "never.wav"))
    assert audio.returncode == 1 and "job_not_ready, HTTP 409" in audio.stderr.decode()
    assert not list(tmp_path.glob("never.wav*"))


class Output:
    """A subprocess's stderr, read as it comes (a progress bar rewrites its line with CRs)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        while piece := proc.stderr.read1(4096):  # type: ignore[attr-defined]
            self.text += piece.decode(errors="replace")

    def join(self) -> str:
        self._thread.join(timeout=30)
        return self.text


def test_a_stream_cut_mid_job_resumes_by_itself_byte_identical(
    farm: Farm, speaker: str, xtts: Path, tmp_path: Path
) -> None:
    """The CLI reaches the farm through a proxy that the test cuts while audio is arriving: the CLI sees the
    connection die and new ones refused, reconnects from its cursor once the proxy is back, and writes exactly the
    job's audio."""
    proxy = TcpProxy("127.0.0.1", farm.port).start()
    book = tmp_path / "book.txt"
    book.write_text(TWO_SEGMENTS, encoding="utf-8")
    out = tmp_path / "book.wav"
    # 2 segments of 150 tokens in chunks of 5: the cut comes at the first audio, with most of the job still to come.
    args = ["job", str(book), "--speaker", speaker, "-o", str(out), "--param", "min_new_tokens=150"]
    args += ["--param", "max_new_tokens=150", "--param", "stream_chunk_size=5"]
    env = {"PATH": os.environ["PATH"], "XTTS_URL": f"http://127.0.0.1:{proxy.port}"}
    proc = subprocess.Popen([str(xtts), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = Output(proc)
    try:
        heard = wait_for(
            lambda: [float(s) for s in re.findall(r"([0-9.]+) s of audio", stderr.text) if float(s) > 0],
            120,
            "the CLI to receive audio",
        )
        job_id = re.search(r"job ([0-9a-f-]+) queued", stderr.text).group(1)  # type: ignore[union-attr]
        proxy.cut()
        assert farm.job(job_id)["state"] in ("queued", "running"), "the job ended before the cut"
        wait_for(lambda: "broke off" in stderr.text, 60, "the CLI to notice the cut")
        proxy.restore()
        assert proc.wait(timeout=180) == 0, stderr.join()
    finally:
        proc.kill() if proc.poll() is None else None
        proxy.stop()
    err = stderr.join()
    assert heard and re.search(r"resuming from cursor \d+-\d+", err), err
    assert "Traceback" not in err
    _rate, frames, pcm = read_wav(out.read_bytes())
    status = farm.job(job_id)
    assert status["state"] == "succeeded" and frames == status["progress"]["audio_samples"] == 2 * xtts_samples(150)
    assert pcm == job_pcm(farm, job_id)


def test_keys_from_the_environment_and_a_bad_key_refused(keyed_farm: Farm, xtts: Path) -> None:
    key = create_api_key(keyed_farm.database_url, "cli-user", "cli-tenant")
    listed = run_xtts(xtts, keyed_farm.base_url, "voices", "list", key=key)
    ok(listed)

    for given, args in (("bad-key", ()), (None, ()), ("bad-key", ("--api-key", "also-bad"))):
        refused = run_xtts(xtts, keyed_farm.base_url, *args, "voices", "list", key=given)
        sent = args[1] if args else given
        farm_says = requests.get(
            keyed_farm.url("/saved_voices"), headers={"Authorization": f"Bearer {sent}"} if sent else {}, timeout=10
        ).json()["error"]
        assert refused.returncode == 1
        assert refused.stderr.decode() == f"xtts: error: {farm_says['message']} ({farm_says['code']}, HTTP 401)\n"
    # A flag wins over the environment.
    ok(run_xtts(xtts, keyed_farm.base_url, "voices", "list", "--api-key", key, key="bad-key"))


def test_a_farm_that_is_not_there_is_one_clear_line(xtts: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_xtts(xtts, url, "say", "Hello", "--speaker", "anyone", timeout=60)
    assert result.returncode == 3
    assert result.stderr.decode() == f"xtts: error: cannot reach the farm at {url}: connection refused\n"


def test_a_book_gets_a_bar_per_chapter_and_is_followed_again_after_the_connection_and_the_command_broke(
    farm: Farm, speaker: str, xtts: Path, tmp_path: Path
) -> None:
    """`xtts book` through a proxy the test cuts mid-book: the CLI says it tries again; interrupted then and run again
    with the same output, it follows the book it sent (kept beside the output) instead of sending it twice."""
    document = tmp_path / "town.epub"
    document.write_bytes(build_epub(noise=False))
    out = tmp_path / "town.m4b"
    proxy = TcpProxy("127.0.0.1", farm.port).start()
    args = ["book", str(document), "--voice", speaker, "-o", str(out)]
    url = f"http://127.0.0.1:{proxy.port}"
    proc = subprocess.Popen(
        [str(xtts), *args], env={"PATH": os.environ["PATH"], "XTTS_URL": url}, stderr=subprocess.PIPE
    )
    stderr = Output(proc)
    try:
        found = wait_for(lambda: re.search(r"book ([0-9a-f]+) queued", stderr.text), 60, "the book to be sent")
        book_id = found.group(1)
        wait_for(lambda: farm.job(book_id)["progress"]["segments_done"] >= 1, 120, "the book to be under way")
        proxy.cut()
        wait_for(lambda: "trying again" in stderr.text, 60, "the CLI to notice the cut")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        assert farm.job(book_id)["state"] in ("queued", "running"), "the book ended before the command broke"
        proxy.restore()
        again = run_xtts(xtts, url, *args, timeout=300)
    finally:
        proc.kill() if proc.poll() is None else None
        proxy.stop()
    err = ok(again)
    assert f"following book {book_id}, sent by an earlier run" in err
    assert requests.get(farm.url("/books"), timeout=10).json()["books"] == [book_id]  # sent once
    assert all(title in err for title, _ in CHAPTERS)  # a bar per chapter
    assert [c["tags"]["title"] for c in probe(out.read_bytes(), ".m4b")["chapters"]] == [t for t, _ in CHAPTERS]
    assert not list(tmp_path.glob("*.xtts-book"))
