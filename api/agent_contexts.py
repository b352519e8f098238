"""A voice agent's context: one text written as it is spoken (an LLM's answer, token by token), one job in SQL.

Text comes in pieces (`add`); a piece of text is spoken as soon as it is complete (shared/text_stream.py: at a
sentence end, a flush, an idle gap or a length), appended to the context's job as segments and dispatched as live
work at once. A delivery thread follows the job's segments in text order and sends each audio chunk the moment it is
in Redis, encoded in the socket's output format, with the timing of the characters it carries
(shared/alignment.py).

A context ends in one of two ways, as ElevenLabs' protocol has them:
- `finish` (the text is complete: `{"text": ""}` on /stream-input, or `close_context` right after a flush): what was
  written is said to the end, then `isFinal`; the job succeeds.
- `interrupt` (`close_context` with text not flushed, the socket closed, the caller barging in): the job is cancelled,
  its workers stop within a chunk (shared/streams.py's stop flag), and the delivery sends nothing more but `isFinal`:
  what the agent received (audio and timing alike) is exactly what was said.
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Celery

from api.delivery import Watchdog, cancel
from api.fanout import stream_hub
from api.output_formats import ChunkEncoder, OutputFormat
from api.submission import Appended, append_text, open_text
from api.telemetry import PlaybackMeter
from shared import jobs, streams
from shared.alignment import ESTIMATE, CharTiming, Timed, UtteranceAligner
from shared.audio import SAMPLE_RATE, SAMPLE_WIDTH
from shared.errors import FarmError, InvalidInput, JobCancelled, NothingToSpeak
from shared.lexicons import Lexicon
from shared.normalization import NormalizeMode
from shared.redis_client import get_redis
from shared.settings import get_settings
from shared.streams import Cursor
from shared.text_stream import IncomingText

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ContextSettings:
    """How a context speaks, fixed when it opens."""

    voice: str
    language: str
    params: dict[str, Any]
    normalize: NormalizeMode
    lexicons: list[Lexicon]
    output: OutputFormat
    long_after: int = 250  # a piece without a sentence end is cut once this long
    eager: bool = False  # auto_mode: a text message that ends a sentence is spoken without waiting for a space


@dataclass(frozen=True)
class Utterance:
    """A piece of the text, as written, and the segments that say it."""

    written: str
    appended: Appended


def alignment_json(timing: CharTiming) -> dict[str, Any] | None:
    """ElevenLabs' `alignment` object (None: this chunk carries no character)."""
    if not timing:
        return None
    return {"chars": timing.chars, "charStartTimesMs": timing.starts_ms, "charDurationsMs": timing.durations_ms}


class SpeechContext:
    """One context: its job, its incoming text, its delivery thread. `send` writes one message to the socket (the
    socket adds `contextId`); it is called from the delivery thread. Its messages carry `sessionId`, the job's id."""

    def __init__(self, celery: Celery, tenant: str, settings: ContextSettings, send: Send) -> None:
        self.celery, self.settings = celery, settings
        self.job = open_text(celery, settings.voice, settings.language, settings.params, tenant)
        # Every message names the context's session (an extension): GET /jobs/{id} shows its state and metrics.
        self._send: Send = lambda body: send({**body, "sessionId": self.job.id})
        self.incoming = IncomingText(long_after=settings.long_after, eager=settings.eager)
        self.flushed = False  # nothing written since the last flush: close_context then finishes rather than stops
        self.last_text_at = time.monotonic()
        self._written_chars = 0
        self._utterances: queue.Queue[Utterance | None] = queue.Queue()
        self._stopped = threading.Event()
        self._closed = False
        self._kept_at = 0.0
        self.keep()
        self._encoder: ChunkEncoder = settings.output.encoder()
        self._thread = threading.Thread(target=self._deliver, name=f"agent-context-{self.job.id[:8]}", daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    # --- text in ----------------------------------------------------------------------------------------------
    def add(self, text: str) -> None:
        """A piece of text as written; speaks what it completes."""
        if not text:
            return
        limit = get_settings().MAX_TEXT_CHARS
        self._written_chars += len(text)
        if self._written_chars > limit:
            raise InvalidInput(
                f"a context's text is limited to MAX_TEXT_CHARS={limit} characters; close it and open another"
            )
        self.flushed = False
        self.last_text_at = time.monotonic()
        for piece in self.incoming.add(text):
            self._speak(piece)

    def flush(self) -> None:
        """Speak what is pending now (a flush, or an idle gap)."""
        piece = self.incoming.flush()
        if piece is not None:
            self._speak(piece)
        self.flushed = True

    def keep(self) -> None:
        """Say that this process still writes the job's text (shared/streams.py: a job whose writer lapsed is ended
        by the reaper); at most once a second."""
        now = time.monotonic()
        if not self._closed and now - self._kept_at >= 1.0:
            streams.keep_writer(get_redis(), self.job.id, get_settings().AGENT_WRITER_TTL_SECONDS)
            self._kept_at = now

    def idle_flush(self, idle_seconds: float) -> None:
        if self.incoming.pending and time.monotonic() - self.last_text_at >= idle_seconds:
            piece = self.incoming.flush()
            if piece is not None:
                self._speak(piece)

    def _speak(self, piece: str) -> None:
        try:
            appended = append_text(self.celery, self.job, piece, self.settings.normalize, self.settings.lexicons)
        except jobs.TextClosed:  # the session was cancelled (DELETE /jobs/{id}): its delivery has ended
            self._closed = True
            return
        except NothingToSpeak:  # a piece of markup or symbols alone (a code fence): nothing to say, go on
            log.info("agent context of job %s: a piece with nothing to say was left out", self.job.id)
            return
        self._utterances.put(Utterance(piece, appended))

    # --- ends ---------------------------------------------------------------------------------------------------
    def finish(self) -> None:
        """The text is complete: what is pending is said, everything is said to the end, then `isFinal`."""
        if self._closed:
            return
        try:
            self.flush()
        except FarmError:
            self._closed = True
            self.interrupt()
            raise
        self._closed = True
        jobs.close_text(self.job.id)
        self._utterances.put(None)

    def interrupt(self) -> None:
        """Stop now: the job is cancelled, nothing more is sent but `isFinal`."""
        self._closed = True
        self._stopped.set()
        if cancel(self.job.id):
            log.info("agent context of job %s interrupted", self.job.id)
        self._utterances.put(None)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    # --- audio out ---------------------------------------------------------------------------------------------
    def _deliver(self) -> None:
        try:
            while not self._stopped.is_set() and (utterance := self._utterances.get()) is not None:
                self._deliver_utterance(utterance)
            if not self._stopped.is_set() and (tail := self._encoder.finish()):
                self._send_audio(tail, None)
        except JobCancelled:
            pass
        except FarmError as exc:
            if not self._stopped.is_set():
                self._send({"error": exc.code, "message": exc.message, "code": 1011, "status": exc.status})
        except Exception:
            log.exception("agent context of job %s: delivery failed", self.job.id)
            if not self._stopped.is_set():
                self._send({"error": "internal_error", "message": "delivery failed", "code": 1011, "status": 500})
        finally:
            self._closed = True  # whatever ended it (DELETE /jobs/{id} too), it takes no more text
            self._encoder.close()
            self._send({"isFinal": True})

    def _deliver_utterance(self, utterance: Utterance) -> None:
        # Listening metrics per piece: a gap before a piece whose text came late is the agent's, not the farm's.
        meter = PlaybackMeter(self.job.id)
        try:
            self._deliver_segments(utterance, meter)
        finally:
            meter.close()

    def _deliver_segments(self, utterance: Utterance, meter: PlaybackMeter) -> None:
        appended = utterance.appended
        aligner = UtteranceAligner(utterance.written, appended.said, appended.expected_samples, SAMPLE_RATE)
        settings = get_settings()
        for k in range(aligner.segments):
            index = appended.first + k
            ended = False
            chunks = streams.read_chunks(
                stream_hub(),
                self.job.id,
                index + 1,
                Cursor(index, 0),
                block_ms=settings.STREAM_READ_BLOCK_MS,
                on_idle=Watchdog(self.job.id),
            )
            for chunk in chunks:
                if self._stopped.is_set():
                    return
                samples = len(chunk.pcm) // SAMPLE_WIDTH
                timed = aligner.chunk(k, samples, chunk.last, chunk.marks)
                ended = ended or chunk.last
                self._send_audio(self._encoder.chunk(chunk.pcm), timed)
                meter.sent(chunk.pcm)
            if not ended and not self._stopped.is_set():  # a stream written before chunks said which was last
                self._send_audio(b"", aligner.chunk(k, 0, True))

    def _send_audio(self, audio: bytes, timed: Timed | None) -> None:
        message: dict[str, Any] = {"audio": base64.b64encode(audio).decode(), "isFinal": None}
        message["normalizedAlignment"] = alignment_json(timed.said) if timed is not None else None
        message["alignment"] = alignment_json(timed.written) if timed is not None else None
        message["alignment_source"] = timed.source if timed is not None else ESTIMATE
        if not self._stopped.is_set():
            self._send(message)
