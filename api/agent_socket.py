"""ElevenLabs' text-to-speech WebSockets, `/v1/text-to-speech/{voice_id}/stream-input` (one context) and
`/multi-stream-input` (several), as voice-agent frameworks speak them: JSON messages in (text as it is written,
`flush`, `close_context`, `close_socket`, keep-alives), JSON messages out (`audio` in base64 with `alignment` and
`normalizedAlignment`, `isFinal`, `contextId`). Each context is one live job (api/agent_contexts.py).

The socket runs in the request's own thread (one per socket, as every streamed response has one) and holds one of the
process's MAX_CONCURRENT_REQUESTS slots for its life; each context's audio leaves from its own delivery thread.
Whatever is wrong with the request (its query, its key, the slot) is answered before the upgrade with the farm's JSON
error contract; whatever is wrong with a message, after it, with an error message in ElevenLabs' shape built from the
same error (`{"message", "error": its code, "code": the close code, "status"}`) and the socket closed with that code:
1003 for a binary frame, 1009 for a message over MAX_SOCKET_MESSAGE_BYTES, 1013 when the farm is full, 1001 when
this API process stops, 1011 for a fault of the farm's, 1008 for everything else (ElevenLabs' own choice)."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from typing import Any

from flask import Response, current_app, g, request
from pydantic import BaseModel, ValidationError
from simple_websocket import ConnectionClosed, Server

from api.agent_contexts import ContextSettings, SpeechContext
from api.auth import ANONYMOUS, Caller, InvalidKey, bearer_value, caller_of_key
from api.errors import invalid_input_from
from api.lifecycle import lifecycle
from api.limits import ConcurrencyLimit
from api.output_formats import OutputFormat, output_format
from api.schemas.elevenlabs import (
    MultiStreamInputMessage,
    SocketQuery,
    StreamInputMessage,
    VoiceSettings,
    normalize_mode,
    xtts_seed,
)
from shared import lexicon_store
from shared.errors import FarmError
from shared.params import SynthesisParams
from shared.settings import get_settings

log = logging.getLogger(__name__)

MAX_CONTEXTS = 5  # ElevenLabs' limit per connection, which clients expect
MAX_SOCKET_MESSAGE_BYTES = 1 << 20
TICK_SECONDS = 0.05  # how often idle text, inactivity and shutdown are looked at
END_WAIT_SECONDS = 600.0  # the longest a closing socket waits for its contexts' audio


class SocketError(Exception):
    """Ends the socket: an error message, then a close with `close_code`."""

    def __init__(self, error: str, message: str, close_code: int = 1008, status: int = 400) -> None:
        super().__init__(message)
        self.error, self.message, self.close_code, self.status = error, message, close_code, status

    @classmethod
    def of(cls, exc: FarmError) -> SocketError:
        """A farm error (the one contract) as a socket error: the farm full is 'try again later', a fault of the
        farm's is 1011, any other refusal a policy violation."""
        close = 1013 if exc.status in (429, 503) else 1011 if exc.status >= 500 else 1008
        return cls(exc.code, exc.message, close, exc.status)

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "error": self.error, "code": self.close_code, "status": self.status}


class _WebSocketResponse(Response):
    """What the view returns once the socket is closed: nothing more may be written to the connection."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self._mode = mode

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._mode == "gunicorn":
            raise StopIteration()
        if self._mode == "werkzeug":
            raise ConnectionError()
        return []


def serve(voice_id: str, multi: bool) -> Response:
    """The view of both sockets: checks before the upgrade (the farm's JSON errors), then the conversation."""
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise UpgradeRequired(f"{request.path} is a WebSocket: connect with a WebSocket client (ws:// or wss://)")
    try:
        query = SocketQuery.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise invalid_input_from(exc, "query") from None
    fmt = output_format(query.output_format)
    caller: Caller = g.caller
    if caller is ANONYMOUS and (request.headers.get("xi-api-key") or query.authorization):
        raise InvalidKey("the API key is not valid (unknown or revoked)")
    limit: ConcurrencyLimit = current_app.extensions["xtts_limit"]
    slot = limit.acquire()
    try:
        ws = Server.accept(request.environ, max_message_size=MAX_SOCKET_MESSAGE_BYTES)
        AgentSocket(ws, voice_id, query, fmt, caller if caller is not ANONYMOUS else None, multi).run()
    finally:
        slot.release()
    return _WebSocketResponse(ws.mode)


class UpgradeRequired(FarmError):
    status, code = 426, "websocket_required"

    def headers(self) -> dict[str, str]:
        return {"Upgrade": "websocket", "Connection": "Upgrade"}


class AgentSocket:
    """One connection: its contexts, its messages, its end."""

    def __init__(
        self, ws: Server, voice_id: str, query: SocketQuery, fmt: OutputFormat, caller: Caller | None, multi: bool
    ) -> None:
        self.ws, self.voice_id, self.query, self.fmt, self.caller, self.multi = ws, voice_id, query, fmt, caller, multi
        self.celery = current_app.extensions["celery"]
        self._lock = threading.Lock()
        self._open: dict[str, SpeechContext] = {}
        self._ending: list[SpeechContext] = []
        self._voice_settings: dict[str, VoiceSettings | None] = {}
        self._last_message_at = time.monotonic()
        self._started = False  # /stream-input: its first message was the initialising one
        self._done = False

    # --- the conversation --------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self._done:
                data = self.ws.receive(timeout=TICK_SECONDS)
                if data is None:
                    self._tick()
                    continue
                self._last_message_at = time.monotonic()
                self._handle(data)
        except ConnectionClosed:
            self._interrupt_all()  # the agent hung up: nobody hears the rest
        except SocketError as exc:
            log.info("agent socket closed: %s (%s)", exc.error, exc.message)
            self._interrupt_all()
            self._send(None, exc.body())
            self._close(exc.close_code, exc.message)
        except Exception:
            log.exception("agent socket failed")
            self._interrupt_all()
            self._send(None, SocketError("internal_error", "the farm failed; see its log", 1011, 500).body())
            self._close(1011, "internal error")

    def _handle(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            raise SocketError("binary_frame", "this socket takes JSON text messages; binary frames are refused", 1003)
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError):  # not JSON, or nested past Python's recursion limit
            raise SocketError("invalid_message", "a message is one JSON object; this one is not JSON") from None
        model: type[BaseModel] = MultiStreamInputMessage if self.multi else StreamInputMessage
        try:
            message = model.model_validate(raw)
        except ValidationError as exc:
            raise SocketError("invalid_message", invalid_input_from(exc, "message").message) from None
        self._authenticate(message)  # type: ignore[arg-type]
        try:
            if isinstance(message, MultiStreamInputMessage):
                self._multi(message)
            else:
                self._single(message)  # type: ignore[arg-type]
        except FarmError as exc:
            raise SocketError.of(exc) from None

    def _authenticate(self, message: StreamInputMessage) -> None:
        if self.caller is not None:
            return
        key = bearer_value(message.key or "")
        if key is None:
            raise SocketError(
                "api_key_required",
                "this farm needs an API key: send it as the xi-api-key header, the authorization query parameter or "
                "the first message's xi_api_key",
            )
        self.caller = caller_of_key(key)
        if self.caller is None:
            raise SocketError("invalid_api_key", "the API key is not valid (unknown or revoked)")

    # --- /stream-input -----------------------------------------------------------------------------------------
    def _single(self, message: StreamInputMessage) -> None:
        if not self._started:
            if message.text is None or message.text == "" or message.text.strip():
                raise SocketError(
                    "init_required",
                    'the first message opens the stream: {"text": " "} with its voice_settings and generation_config; '
                    "text comes after it",
                )
            self._started = True
            self._open_context("", message)
            return
        context = self._open.get("")
        if context is None:
            raise SocketError("stream_ended", 'the stream has ended ({"text": ""} was sent): open a new socket')
        self._check_voice_settings("", message)
        if message.text == "":  # the end of the text: say it all, then isFinal, then close
            context.finish()
            self._end(graceful=True)
            return
        context.add(message.text or "")
        if message.flush or message.try_trigger_generation:
            context.flush()

    # --- /multi-stream-input -----------------------------------------------------------------------------------
    def _multi(self, message: MultiStreamInputMessage) -> None:
        if message.close_socket:
            self._end(graceful=True)
            return
        name = message.context
        context = self._open.get(name)
        if context is not None and context.closed:  # ended from outside (DELETE /jobs/{id}): the name is free
            self._ending.append(self._open.pop(name))
            context = None
        if context is None:
            if message.close_context or not message.text:
                return  # a flush, keep-alive or close of a context that has ended (or never was): nothing to do
            context = self._open_context(name, message)
            if message.text.strip():  # initialised with text rather than the usual " "
                context.add(message.text)
        else:
            self._check_voice_settings(name, message)
            context.add(message.text or "")
        if message.flush:
            context.flush()
        if message.close_context:
            self._close_context(name, context)

    def _close_context(self, name: str, context: SpeechContext) -> None:
        """ElevenLabs' rule: a context closed right after a flush says its text to the end; any other close is an
        interruption."""
        del self._open[name]
        self._ending.append(context)
        if context.flushed and not context.incoming.pending:
            context.finish()
        else:
            context.interrupt()

    # --- contexts ----------------------------------------------------------------------------------------------
    def _open_context(self, name: str, message: StreamInputMessage | MultiStreamInputMessage) -> SpeechContext:
        if len(self._open) >= MAX_CONTEXTS:
            raise SocketError(
                "max_active_conversations",
                f"Maximum simultaneous contexts per WebSocket connection exceeded ({MAX_CONTEXTS}). Please close an "
                "existing context before opening a new one.",
            )
        assert self.caller is not None
        voice = getattr(message, "voice_id", None) or self.voice_id
        language = getattr(message, "language_code", None) or self.query.language_code
        speed = message.voice_settings.speed if message.voice_settings and message.voice_settings.speed else 1.0
        config = message.generation_config or message.generator_config
        schedule = config.chunk_length_schedule if config is not None else None
        locators = message.pronunciation_dictionary_locators
        names = [item.pronunciation_dictionary_id for item in locators] if locators is not None else None
        settings = ContextSettings(
            voice=voice,
            language=language,
            params=SynthesisParams(speed=speed, seed=xtts_seed(self.query.seed)).model_dump(),
            normalize=normalize_mode(self.query.apply_text_normalization),
            lexicons=lexicon_store.for_request(self.caller.tenant, names),
            output=self.fmt,
            long_after=max(schedule) if schedule else 250,
            eager=self.query.auto_mode,
        )
        context = SpeechContext(self.celery, self.caller.tenant, settings, send=lambda body: self._send(name, body))
        self._open[name] = context
        self._voice_settings[name] = message.voice_settings
        return context

    def _check_voice_settings(self, name: str, message: StreamInputMessage | MultiStreamInputMessage) -> None:
        if message.voice_settings is not None and message.voice_settings != self._voice_settings.get(name):
            raise SocketError(
                "voice_settings_changed",
                "voice_settings field must be provided in the first message and then either be not provided or not "
                "change",
            )

    def _tick(self) -> None:
        """Between messages: speak text left waiting, end what has ended, stop when the process stops or the
        agent has been silent for inactivity_timeout."""
        idle = get_settings().AGENT_IDLE_FLUSH_SECONDS
        for name, context in list(self._open.items()):
            if context.closed:  # ended from outside (DELETE /jobs/{id}): the name may open a new context
                self._ending.append(self._open.pop(name))
                continue
            context.idle_flush(idle)
            context.keep()
        self._ending = [context for context in self._ending if not context.done]
        if lifecycle.streams_must_end():
            raise SocketError("shutting_down", "this API process is shutting down; reconnect", 1001, 503)
        if time.monotonic() - self._last_message_at > self.query.inactivity_timeout:
            self._end(graceful=True, reason="timeout")

    def _end(self, graceful: bool, reason: str = "") -> None:
        """Close every context (a flushed one says its text to the end), wait for their audio, close the socket."""
        for name, context in list(self._open.items()):
            if graceful and (not self.multi or context.flushed or reason == "timeout"):
                self._open.pop(name)
                self._ending.append(context)
                context.finish()
            else:
                self._close_context(name, context)
        deadline = time.monotonic() + END_WAIT_SECONDS
        for context in self._ending:
            while not context.done and time.monotonic() < deadline and self.ws.connected:
                context.join(TICK_SECONDS)
        if not self.ws.connected:
            self._interrupt_all()
        self._done = True
        if reason == "timeout":
            timeout = self.query.inactivity_timeout
            error = SocketError(
                "input_timeout_exceeded",
                f"Have not received a new text input within the timeout of {timeout} seconds. Streaming input "
                "terminated. Please make sure to either feed the input in the timely manner, or to send the end of "
                'input text (empty string "") when done.',
            )
            self._send(None, error.body())
            self._close(1008, "input timeout exceeded")
            return
        self._close(1000, "")

    def _interrupt_all(self) -> None:
        for context in [*self._open.values(), *self._ending]:
            context.interrupt()
        self._ending += self._open.values()
        self._open.clear()
        self._done = True

    # --- out ----------------------------------------------------------------------------------------------------
    def _send(self, name: str | None, body: dict[str, Any]) -> None:
        if self.multi and name is not None:
            body = {**body, "contextId": name}
        text = json.dumps(body, separators=(",", ":"))
        # The agent may have gone: its contexts are interrupted by the receiving loop.
        with self._lock, contextlib.suppress(ConnectionClosed, OSError):
            self.ws.send(text)

    def _close(self, code: int, reason: str) -> None:
        # A close frame's reason is at most 123 bytes of UTF-8.
        with self._lock, contextlib.suppress(ConnectionClosed, OSError):
            self.ws.close(code, reason.encode()[:120].decode(errors="ignore"))
