"""XTTSClient: the farm's HTTP API as Python calls. It talks HTTP only and never imports the farm's code."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from xtts_client.errors import FarmError, FarmUnreachable, UnsupportedFormat, XTTSError, describe_connection_error
from xtts_client.formats import CLIENT_SIDE, FORMATS, answered_format
from xtts_client.resume import AudioEvent, Dropped, EndEvent, OnReconnect, RetryPolicy, follow
from xtts_client.speaking import SpeakingSession, session_url
from xtts_client.wav import WavReader

DEFAULT_URL = "http://127.0.0.1:8000"
# (connect, read): a stream may wait long between chunks while the farm is busy, but a dead peer is noticed.
DEFAULT_TIMEOUT = (10.0, 300.0)

# A reference recording: a path, raw bytes, or (file name, bytes).
Reference = str | os.PathLike[str] | bytes | tuple[str, bytes]


class JobFailed(XTTSError):
    """A synthesis ended without all its audio; `status` is the job's status as GET /jobs/{id} gives it."""

    def __init__(self, status: dict[str, Any]) -> None:
        why = f": {status['error']}" if status.get("error") else ""
        super().__init__(f"job {status.get('id')} is {status.get('state')}{why}")
        self.status = status


@dataclass(frozen=True)
class JobProgress:
    """How far a followed job is: segments (pieces of the text) delivered of all, and seconds of audio received."""

    state: str
    segments_done: int
    segments_total: int
    audio_samples: int
    sample_rate: int

    @property
    def audio_seconds(self) -> float:
        return self.audio_samples / self.sample_rate


@dataclass(frozen=True)
class JobUpdate:
    """One step of a followed job: its progress, and the audio chunk that moved it (None for the first and the
    last update)."""

    progress: JobProgress
    chunk: AudioEvent | None = None


class AudioStream:
    """The audio of a /tts_stream response in the requested format, iterated as it arrives. `session_id` names
    its job (GET /jobs/{id} tells its state). Close it (or use `with`) to stop early: the farm then cancels
    the synthesis."""

    def __init__(self, client: XTTSClient, response: requests.Response, response_format: str) -> None:
        self._client = client
        self._response = response
        self.format = response_format
        self.session_id: str = response.headers.get("X-Session-Id", "")
        self._wav = WavReader() if response_format in CLIENT_SIDE else None
        self._check_format(response)

    def _check_format(self, response: requests.Response) -> None:
        answered = answered_format(response.headers.get("Content-Type"))
        expected = "wav" if self.format in CLIENT_SIDE else self.format
        if answered is not None and answered != expected:
            response.close()
            raise UnsupportedFormat(
                f"asked for {self.format} but the farm answered {answered}: this farm does not encode "
                f"{self.format} yet (wav and pcm work with any farm)"
            )

    @property
    def sample_rate(self) -> int | None:
        """From the WAV header (wav and pcm), once the first bytes have arrived."""
        return self._wav.sample_rate if self._wav is not None else None

    def _pieces(self) -> Iterator[tuple[bytes, bytes]]:
        """(bytes as received, the PCM in them) as they arrive; then checks that the synthesis delivered all."""
        try:
            for piece in self._response.iter_content(chunk_size=None):
                yield piece, self._wav.feed(piece) if self._wav is not None else b""
        except requests.RequestException as exc:
            raise FarmUnreachable(
                self._client.base_url, f"the stream broke off: {describe_connection_error(exc)}"
            ) from None
        finally:
            self._response.close()
        # The stream simply ends when synthesis fails mid-way: the job's status says whether all came.
        status = self._client.job(self.session_id)
        if status["state"] != "succeeded":
            raise JobFailed(status)

    def __iter__(self) -> Iterator[bytes]:
        for raw, pcm in self._pieces():
            out = pcm if self.format == "pcm" else raw
            if out:
                yield out

    def pcm(self) -> Iterator[bytes]:
        """The 16-bit PCM only (wav and pcm streams), whatever header the farm sent; `sample_rate` is known once
        the first piece has come."""
        if self._wav is None:
            raise ValueError(f"a {self.format} stream has no PCM to give")
        for _raw, pcm in self._pieces():
            if pcm:
                yield pcm

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class XTTSClient:
    """The farm at `base_url` (default: $XTTS_URL, else http://127.0.0.1:8000), with `api_key` (default:
    $XTTS_API_KEY) sent as `Authorization: Bearer <key>`. Every error the farm answers is raised as FarmError
    (status, code, message, details); no answer at all as FarmUnreachable."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("XTTS_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("XTTS_API_KEY")
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "xtts-client/0.1"
        if key:
            self._session.headers["Authorization"] = f"Bearer {key}"

    # --- plumbing -------------------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return self.base_url + path

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One HTTP request; a 4xx/5xx answer raises FarmError, no answer FarmUnreachable."""
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self._session.request(method, self._url(path), **kwargs)
        except requests.RequestException as exc:
            raise FarmUnreachable(self.base_url, describe_connection_error(exc)) from None
        if response.status_code >= 400:
            error = FarmError.from_response(response)
            response.close()
            raise error
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise FarmError(response.status_code, "not_json", f"{path} answered something that is not JSON") from None

    @staticmethod
    def _body(text: str, language: str, speaker: str | None, params: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"text": text, "language": language, **params}
        if speaker is not None:
            body["speaker_id"] = speaker
        return {k: v for k, v in body.items() if v is not None}

    # --- what the farm offers ---------------------------------------------------------------------------------
    def languages(self) -> list[str]:
        return list(self._json("GET", "/languages"))

    def speakers(self) -> list[str]:
        """The built-in speakers of the live workers' model."""
        return list(self._json("GET", "/available_speakers")["speakers"])

    def health(self) -> dict[str, Any]:
        return dict(self._json("GET", "/health"))

    # --- speech ---------------------------------------------------------------------------------------------
    def stream(
        self,
        text: str,
        *,
        language: str = "en",
        speaker: str | None = None,
        response_format: str = "wav",
        **params: Any,
    ) -> AudioStream:
        """Speech as it is synthesized (POST /tts_stream). `speaker` is a saved voice id or a built-in speaker;
        `params` are the farm's optional synthesis fields (temperature, speed, stream_chunk_size, ...).
        wav and pcm come from the farm's WAV; other formats are asked of the farm as `response_format`."""
        if response_format not in FORMATS:
            raise ValueError(f"unknown format {response_format!r}; one of {', '.join(FORMATS)}")
        body = self._body(text, language, speaker, params)
        if response_format not in CLIENT_SIDE:
            body["response_format"] = response_format
        response = self.request("POST", "/tts_stream", json=body, stream=True)
        return AudioStream(self, response, response_format)

    def say(self, text: str, **kwargs: Any) -> bytes:
        """The whole audio of `text` (the arguments of `stream`)."""
        with self.stream(text, **kwargs) as audio:
            return b"".join(audio)

    # --- jobs -----------------------------------------------------------------------------------------------
    def submit_job(
        self,
        text: str,
        *,
        language: str = "en",
        speaker: str | None = None,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Queue a job (POST /jobs): its `id`, `state` and URLs. With `idempotency_key`, sending it again returns
        the same job."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return dict(self._json("POST", "/jobs", json=self._body(text, language, speaker, params), headers=headers))

    def job(self, job_id: str) -> dict[str, Any]:
        """A job's status: state, progress, timestamps, error (GET /jobs/{id})."""
        return dict(self._json("GET", f"/jobs/{job_id}"))

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return dict(self._json("DELETE", f"/jobs/{job_id}"))

    def job_audio(self, job_id: str, response_format: str = "wav") -> bytes:
        """The complete audio of a job that has succeeded (GET /jobs/{id}/audio)."""
        params = {"response_format": response_format} if response_format not in CLIENT_SIDE else None
        response = self.request("GET", f"/jobs/{job_id}/audio", params=params)
        answered = answered_format(response.headers.get("Content-Type"))
        expected = "wav" if response_format in CLIENT_SIDE else response_format
        if answered is not None and answered != expected:
            raise UnsupportedFormat(
                f"asked for {response_format} but the farm answered {answered}: this farm does not encode "
                f"{response_format} yet (wav and pcm work with any farm)"
            )
        if response_format == "pcm":
            return WavReader().feed(response.content)
        return response.content

    # --- books ------------------------------------------------------------------------------------------------
    def submit_book(self, document: str | os.PathLike[str], options: dict[str, Any]) -> dict[str, Any]:
        """Send a document (EPUB, Markdown, HTML, text) to be made an audiobook (POST /books): its id and size.
        `options`: at least `voice`; see the farm's BookOptions."""
        path = Path(document)
        with path.open("rb") as file:
            files = {"file": (path.name, file)}
            return dict(self._json("POST", "/books", files=files, data={"options": json.dumps(options)}))

    def book(self, book_id: str) -> dict[str, Any]:
        """A book's state and progress per chapter, with its ETA (GET /books/{id})."""
        return dict(self._json("GET", f"/books/{book_id}"))

    def book_audio(self, book_id: str, fmt: str = "m4b", chapter: int | None = None) -> bytes:
        """A finished book's audio (GET /books/{id}/audio): m4b, mp3, opus or wav; one chapter with `chapter`."""
        params: dict[str, Any] = {"format": fmt}
        if chapter is not None:
            params["chapter"] = chapter
        return self.request("GET", f"/books/{book_id}/audio", params=params).content

    def _open_job_stream(self, job_id: str, cursor: str | None) -> Iterator[bytes]:
        try:
            response = self._session.get(
                self._url(f"/jobs/{job_id}/stream"),
                params={"cursor": cursor} if cursor else None,
                stream=True,
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise Dropped(describe_connection_error(exc)) from None
        if response.status_code >= 400:
            error = FarmError.from_response(response)
            response.close()
            raise error
        return _body(response)

    def job_events(
        self, job_id: str, cursor: str | None = None, *, on_reconnect: OnReconnect | None = None
    ) -> Iterator[AudioEvent | EndEvent]:
        """A job's audio events after `cursor` (GET /jobs/{id}/stream), then its end event. When the connection
        drops, it reconnects from the last event's cursor by itself (`on_reconnect(cursor, attempt, reason)`
        hears of each try): what it yields is exactly what one unbroken read gives. An `error` event raises its
        FarmError; a stream that cannot be resumed raises StreamBroken."""
        return follow(
            lambda at: self._open_job_stream(job_id, at),
            job_id,
            cursor,
            policy=self.retry,
            on_reconnect=on_reconnect,
        )

    def follow_job(
        self, job_id: str, cursor: str | None = None, *, on_reconnect: OnReconnect | None = None
    ) -> Iterator[JobUpdate]:
        """Progress and audio of a job as it is delivered: a first update, one per audio chunk, and a last one
        when the job has ended (`progress.state` succeeded)."""
        status = self.job(job_id)
        total, rate = status["progress"]["segments_total"], status["sample_rate"]
        first = int(cursor.partition("-")[0]) if cursor else 0
        samples = 0
        yield JobUpdate(JobProgress(status["state"], first, total, samples, rate))
        for event in self.job_events(job_id, cursor, on_reconnect=on_reconnect):
            if isinstance(event, EndEvent):
                yield JobUpdate(JobProgress(event.state, total, total, samples, rate))
                return
            samples += event.samples
            # Chunks come in order: every segment before this chunk's is complete.
            yield JobUpdate(JobProgress("running", event.segment, total, samples, rate), event)

    # --- voices ---------------------------------------------------------------------------------------------
    def clone_voice(
        self,
        references: Reference | Sequence[Reference],
        voice_id: str | None = None,
        *,
        name: str = "",
        description: str = "",
        overwrite: bool = False,
    ) -> dict[str, Any]:
        """Clone a voice from one or more recordings (POST /clone_speaker). With `voice_id`, it is saved under
        that id (the answer's `voice`); without, the answer holds its latents (`gpt_cond_latent`,
        `speaker_embedding`), which `stream(..., speaker_latents=...)` accepts."""
        items = [references] if isinstance(references, (str, os.PathLike, bytes, tuple)) else list(references)
        files = [("wav_file", _reference(i, ref)) for i, ref in enumerate(items)]
        options: dict[str, Any] = {"response_format": "json"}
        if voice_id is not None:
            options = {"response_format": "save", "save_id": voice_id, "overwrite": overwrite}
            options |= {"name": name, "description": description}
        return dict(self._json("POST", "/clone_speaker", files=files, data={"options": json.dumps(options)}))

    def voices(self, per_page: int = 500) -> list[dict[str, Any]]:
        """Every saved voice of this key's tenant (all pages of GET /saved_voices)."""
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self._json("GET", "/saved_voices", params={"page": page, "per_page": per_page})
            found += body["voices"]
            if not body["voices"] or len(found) >= body["total"]:
                return found
            page += 1

    def voice(self, voice_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/saved_voices/{voice_id}"))

    def delete_voice(self, voice_id: str) -> dict[str, Any]:
        return dict(self._json("DELETE", f"/saved_voices/{voice_id}"))

    def speak_stream(
        self, voice: str, *, language: str = "en", output_format: str = "pcm_24000", speed: float | None = None
    ) -> SpeakingSession:
        """An async session for text written as it is spoken (a voice agent's LLM): `async with` it, `await
        session.send(text)` as text comes, `await session.end()`, and `async for audio in session` (raw 16-bit PCM at
        24 kHz by default; any of ElevenLabs' output formats)."""
        headers = {"User-Agent": "xtts-client/0.1"}
        if auth := self._session.headers.get("Authorization"):
            headers["Authorization"] = str(auth)
        settings: dict[str, Any] = {"voice_settings": {"speed": speed}} if speed is not None else {}
        return SpeakingSession(session_url(self.base_url, voice, output_format, language), headers, settings)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> XTTSClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _body(response: requests.Response) -> Iterator[bytes]:
    """A streamed response's bytes as they come; a broken connection is Dropped."""
    try:
        yield from response.iter_content(chunk_size=None)
    except requests.RequestException as exc:
        raise Dropped(describe_connection_error(exc)) from None
    finally:
        response.close()


def _reference(index: int, ref: Reference) -> tuple[str, bytes, str]:
    if isinstance(ref, bytes):
        return (f"reference-{index + 1}.wav", ref, "application/octet-stream")
    if isinstance(ref, tuple):
        return (ref[0], ref[1], "application/octet-stream")
    path = Path(ref)
    return (path.name, path.read_bytes(), "application/octet-stream")
