"""`xtts`: the farm from the command line. Farm errors and an unreachable farm are one line on stderr and a
non-zero exit status, never a traceback.

Exit status: 0 done; 1 the farm refused or the synthesis failed; 2 bad usage; 3 the farm cannot be reached;
130 interrupted."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from xtts_client.books import make_book
from xtts_client.client import DEFAULT_URL, JobFailed, XTTSClient
from xtts_client.errors import FarmError, FarmUnreachable, XTTSError
from xtts_client.formats import CLIENT_SIDE, FORMATS, format_for
from xtts_client.output import AudioOutput
from xtts_client.progress import JobBar

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 1, 2, 3, 130


class UsageError(Exception):
    """A mistake in the command line that the parser cannot see (an unknown extension, a bad --param)."""


# --- speech ---------------------------------------------------------------------------------------------------
def _params(args: argparse.Namespace) -> dict[str, Any]:
    """The optional synthesis fields: the named flags, then each --param KEY=VALUE (VALUE read as JSON if it is)."""
    params: dict[str, Any] = {"speed": args.speed, "temperature": args.temperature}
    for item in args.param:
        key, equals, raw = item.partition("=")
        if not equals or not key:
            raise UsageError(f"--param takes KEY=VALUE, not {item!r}")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return {k: v for k, v in params.items() if v is not None}


def _voice(client: XTTSClient, args: argparse.Namespace) -> str:
    if args.voice or args.speaker:
        return str(args.voice or args.speaker)
    speakers = client.speakers()
    if not speakers:
        raise UsageError("the farm's model has no built-in speaker: give --voice (a saved voice)")
    print(f"xtts: no --voice or --speaker given; using the built-in speaker {speakers[0]!r}", file=sys.stderr)
    return speakers[0]


def _format(args: argparse.Namespace) -> str:
    try:
        return format_for(args.output, args.format)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_say(client: XTTSClient, args: argparse.Namespace) -> int:
    fmt = _format(args)
    text = args.text if args.text != "-" else sys.stdin.read()
    voice = _voice(client, args)
    with client.stream(text, language=args.language, speaker=voice, response_format=fmt, **_params(args)) as audio:
        output = AudioOutput(args.output, fmt)
        try:
            if fmt in CLIENT_SIDE:
                for pcm in audio.pcm():
                    output.write_pcm(pcm, audio.sample_rate or 24000)
            else:
                for piece in audio:
                    output.write(piece)
        except BaseException:
            output.discard()
            raise
        rate = audio.sample_rate or 24000
        output.finish(rate)
    seconds = f"{output.pcm_bytes / 2 / rate:.1f} s of audio, " if fmt in CLIENT_SIDE else ""
    where = f"wrote {args.output}: " if args.output not in (None, "-") else ""
    print(f"xtts: {where}{seconds}job {audio.session_id}", file=sys.stderr)
    return 0


# --- jobs -----------------------------------------------------------------------------------------------------
def cmd_job(client: XTTSClient, args: argparse.Namespace) -> int:
    fmt = _format(args)
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    voice = _voice(client, args)
    job = client.submit_job(text, language=args.language, speaker=voice, **_params(args))
    print(f"xtts: job {job['id']} queued", file=sys.stderr, flush=True)
    if args.no_follow:
        print(job["id"])
        return 0
    return _follow(client, job["id"], args.output, fmt, quiet=args.quiet)


def _follow(client: XTTSClient, job_id: str, path: str | None, fmt: str, *, quiet: bool) -> int:
    """Follow a job's stream with a progress bar, writing wav/pcm as it arrives (other formats: the farm's encoding
    of the whole job, fetched once it has succeeded). A dropped stream resumes from its cursor by itself."""
    bar = JobBar(job_id, enabled=not quiet)

    def reconnecting(cursor: str | None, attempt: int, reason: str) -> None:
        where = f"cursor {cursor}" if cursor else "the start"
        bar.note(f"xtts: stream of job {job_id} broke off ({reason}); resuming from {where} (attempt {attempt})")

    output = AudioOutput(path, fmt)
    rate = 24000
    try:
        try:
            for update in client.follow_job(job_id, on_reconnect=reconnecting):
                rate = update.progress.sample_rate
                if update.chunk is not None and fmt in CLIENT_SIDE:
                    output.write_pcm(update.chunk.pcm, rate)
                bar.update(update.progress)
        finally:
            bar.close()
        if fmt not in CLIENT_SIDE:
            output.write(client.job_audio(job_id, fmt))
    except KeyboardInterrupt:
        output.discard()
        print(
            f"xtts: stopped following job {job_id}; it runs on (xtts jobs follow {job_id}; xtts jobs cancel {job_id})",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except BaseException:
        output.discard()
        raise
    output.finish(rate)
    if path not in (None, "-"):
        print(f"xtts: wrote {path}", file=sys.stderr)
    return 0


BOOK_FORMATS = ("m4b", "mp3", "opus", "wav")


def cmd_book(client: XTTSClient, args: argparse.Namespace) -> int:
    output = Path(args.output)
    fmt = args.format or output.suffix.lstrip(".").lower()
    if fmt not in BOOK_FORMATS:
        choices = ", ".join(BOOK_FORMATS)
        raise UsageError(f"cannot tell the audiobook's format from {output.name!r}: give --format ({choices})")
    options: dict[str, Any] = {"voice": args.voice, **_params(args)}
    for name in ("language", "title", "author", "paragraph_pause_ms", "chapter_pause_ms", "loudness_lufs"):
        if getattr(args, name, None) is not None:
            options[name] = getattr(args, name)
    book_id = make_book(client, Path(args.document), output, options, fmt, quiet=args.quiet)
    print(f"xtts: book {book_id} written to {output}", file=sys.stderr)
    return 0


def cmd_jobs_follow(client: XTTSClient, args: argparse.Namespace) -> int:
    return _follow(client, args.job_id, args.output, _format(args), quiet=args.quiet)


def cmd_jobs_audio(client: XTTSClient, args: argparse.Namespace) -> int:
    fmt = _format(args)
    output = AudioOutput(args.output, fmt)
    try:
        output.write(client.job_audio(args.job_id, fmt))
    except BaseException:
        output.discard()
        raise
    output.finish()
    return 0


def _status_line(status: dict[str, Any]) -> str:
    progress = status["progress"]
    line = (
        f"job {status['id']}: {status['state']}, {progress['segments_done']}/{progress['segments_total']} segments, "
        f"{progress['audio_seconds']:.1f} s of audio"
    )
    return line + (f"; error: {status['error']}" if status.get("error") else "")


def cmd_jobs_status(client: XTTSClient, args: argparse.Namespace) -> int:
    status = client.job(args.job_id)
    print(json.dumps(status, indent=2) if args.json else _status_line(status))
    return 0


def cmd_jobs_cancel(client: XTTSClient, args: argparse.Namespace) -> int:
    print(_status_line(client.cancel_job(args.job_id)))
    return 0


# --- voices ---------------------------------------------------------------------------------------------------
def cmd_voices_clone(client: XTTSClient, args: argparse.Namespace) -> int:
    answer = client.clone_voice(
        [Path(f) for f in args.files],
        args.id,
        name=args.name or "",
        description=args.description or "",
        overwrite=args.overwrite,
    )
    if args.id is None:  # no id: the latents themselves, for speaker_latents
        text = json.dumps({k: answer[k] for k in ("gpt_cond_latent", "speaker_embedding")}, separators=(",", ":"))
        if args.output in (None, "-"):
            print(text)
        else:
            Path(args.output).write_text(text + "\n", encoding="utf-8")
        return 0
    reused = " (the stored result for this audio)" if answer.get("reused") else ""
    print(f"saved voice {answer['voice']['id']} from {answer['reference_seconds']} s of audio{reused}")
    return 0


def cmd_voices_list(client: XTTSClient, args: argparse.Namespace) -> int:
    voices = client.voices()
    if args.json:
        print(json.dumps(voices, indent=2))
        return 0
    for voice in voices:
        print("\t".join((voice["id"], voice["name"], voice["created_at"])))
    if not voices:
        print("no saved voices", file=sys.stderr)
    return 0


def cmd_voices_delete(client: XTTSClient, args: argparse.Namespace) -> int:
    for voice_id in args.ids:
        client.delete_voice(voice_id)
        print(f"deleted voice {voice_id}")
    return 0


def cmd_languages(client: XTTSClient, args: argparse.Namespace) -> int:
    print("\n".join(client.languages()))
    return 0


def cmd_speakers(client: XTTSClient, args: argparse.Namespace) -> int:
    print("\n".join(client.speakers()))
    return 0


# --- the parser -----------------------------------------------------------------------------------------------
Command = Callable[[XTTSClient, argparse.Namespace], int]


def _connection_options(suppress: bool) -> argparse.ArgumentParser:
    """--url, --api-key, --timeout: accepted before the command and after it (where they win)."""
    parent = argparse.ArgumentParser(add_help=False)
    default: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    parent.add_argument("--url", help=f"the farm (default: $XTTS_URL, else {DEFAULT_URL})", **default)
    parent.add_argument("--api-key", help="API key (default: $XTTS_API_KEY)", **default)
    parent.add_argument("--timeout", type=float, help="seconds to wait for an answer (default 300)", **default)
    return parent


def _synthesis_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-l", "--language", default="en", help="language code (default en; see `xtts languages`)")
    who = parent.add_mutually_exclusive_group()
    who.add_argument("--voice", help="a saved voice id (see `xtts voices list`)")
    who.add_argument("--speaker", help="a built-in speaker (see `xtts speakers`); default: the first one")
    _output_options(parent)
    parent.add_argument("--speed", type=float, help="speaking speed (1.0 is normal)")
    parent.add_argument("--temperature", type=float, help="sampling temperature")
    parent.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other synthesis field, e.g. --param top_k=50 --param stream_chunk_size=20 (repeatable)",
    )
    return parent


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", help="file to write (default, or -: stdout)")
    parser.add_argument(
        "-f", "--format", choices=FORMATS, help="audio format (default: from the -o extension, else wav)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xtts", description="Speak with the XTTS farm.", parents=[_connection_options(suppress=False)]
    )
    connection, synthesis = _connection_options(suppress=True), _synthesis_options()
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(sub: Any, name: str, run: Command, help: str, *parents: argparse.ArgumentParser) -> Any:
        command = sub.add_parser(name, help=help, description=help, parents=[connection, *parents])
        command.set_defaults(run=run)
        return command

    say = add(commands, "say", cmd_say, "speak a text (to a file or stdout) as it is synthesized", synthesis)
    say.add_argument("text", help="the text (- reads it from stdin)")

    job = add(commands, "job", cmd_job, "synthesize a text file as a job, following its progress", synthesis)
    job.add_argument("file", help="a UTF-8 text file (- reads stdin)")
    job.add_argument("--no-follow", action="store_true", help="print the job id and leave it running")
    job.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    book = add(commands, "book", cmd_book, "make an audiobook of a document (EPUB, Markdown, HTML, text)")
    book.add_argument("document", help="the document")
    book.add_argument("-o", "--output", required=True, help="the audiobook file (.m4b, .mp3, .opus or .wav)")
    book.add_argument("--voice", required=True, help="a saved voice, a built-in speaker, an alias or a blend")
    book.add_argument("--format", choices=BOOK_FORMATS, help="default: from the output's extension")
    book.add_argument("--language", help="default: the document's")
    book.add_argument("--title")
    book.add_argument("--author")
    book.add_argument("--paragraph-pause-ms", type=int)
    book.add_argument("--chapter-pause-ms", type=int)
    book.add_argument("--loudness-lufs", type=float)
    book.add_argument("--speed", type=float, help="speaking speed (1.0 is normal)")
    book.add_argument("--temperature", type=float)
    book.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a synthesis parameter")
    book.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    jobs = commands.add_parser("jobs", help="look after jobs").add_subparsers(dest="action", required=True)
    for name, run, help in (
        ("status", cmd_jobs_status, "a job's state and progress"),
        ("cancel", cmd_jobs_cancel, "cancel a job"),
        ("follow", cmd_jobs_follow, "follow a job's audio with a progress bar (resumes by itself)"),
        ("audio", cmd_jobs_audio, "the complete audio of a job that has succeeded"),
    ):
        sub = add(jobs, name, run, help)
        sub.add_argument("job_id")
        if name == "status":
            sub.add_argument("--json", action="store_true", help="the whole status as JSON")
        if name in ("follow", "audio"):
            _output_options(sub)
        if name == "follow":
            sub.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    voices = commands.add_parser("voices", help="saved voices").add_subparsers(dest="action", required=True)
    clone = add(voices, "clone", cmd_voices_clone, "clone a voice from recordings (WAV, MP3, FLAC, OGG, M4A)")
    clone.add_argument("files", nargs="+", help="one or more recordings of the voice")
    clone.add_argument("--id", help="save it under this id (without: print its latents as JSON)")
    clone.add_argument("--name", help="a display name")
    clone.add_argument("--description")
    clone.add_argument("--overwrite", action="store_true", help="replace a voice with the same id")
    clone.add_argument("-o", "--output", help="with no --id: file for the latents' JSON (default stdout)")
    listing = add(voices, "list", cmd_voices_list, "list the saved voices")
    listing.add_argument("--json", action="store_true")
    delete = add(voices, "delete", cmd_voices_delete, "delete saved voices")
    delete.add_argument("ids", nargs="+", metavar="ID")

    add(commands, "languages", cmd_languages, "languages the farm speaks")
    add(commands, "speakers", cmd_speakers, "the model's built-in speakers")
    return parser


def _fail(message: str, status: int) -> int:
    print(f"xtts: error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    timeout = args.timeout or 300.0
    try:
        with XTTSClient(args.url, args.api_key, timeout=(min(timeout, 10.0), timeout)) as client:
            return int(args.run(client, args))
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except FarmUnreachable as exc:
        hint = "" if args.url or "XTTS_URL" in os.environ else " (set XTTS_URL or --url)"
        return _fail(f"{exc}{hint}", EXIT_UNREACHABLE)
    except (FarmError, JobFailed, XTTSError) as exc:
        return _fail(str(exc), EXIT_FAILED)
    except BrokenPipeError:  # stdout's reader left (`xtts say ... | head -c 100`): not an error worth a line
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second complaint when Python exits
        return EXIT_FAILED
    except OSError as exc:  # a file that cannot be read or written
        return _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
