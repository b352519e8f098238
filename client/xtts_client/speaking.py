"""An async speaking session for voice agents: text in as it is written, audio out as it is made, over the farm's
ElevenLabs-compatible WebSocket (`/v1/text-to-speech/{voice}/stream-input`).

    async with farm.speak_stream("Claribel Dervla") as session:
        async for token in llm_tokens():
            await session.send(token)
        await session.end()              # the text is complete: the rest is said, then the audio ends
        async for audio in session:      # raw 16-bit PCM (pcm_24000 by default), as it comes
            player.write(audio)

Sending and listening may run at once (two tasks); `interrupt()` stops the audio at once (the caller barged in),
and `spoken` tells which characters the audio received so far covers."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import websockets
from websockets.asyncio.client import ClientConnection, connect

from xtts_client.errors import FarmError


class SpeakingSession:
    """One context of the farm's stream-input socket. Use it with `async with` (XTTSClient.speak_stream)."""

    def __init__(self, url: str, headers: dict[str, str], settings: dict[str, Any]) -> None:
        self._url, self._headers, self._settings = url, headers, settings
        self._ws: ClientConnection | None = None
        self.session_id: str | None = None
        self.spoken = ""  # the characters (as written) the audio received so far covers
        self.error: dict[str, Any] | None = None

    async def __aenter__(self) -> SpeakingSession:
        self._ws = await connect(self._url, additional_headers=self._headers, max_size=16 << 20)
        await self._ws.send(json.dumps({"text": " ", **self._settings}))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()

    def _socket(self) -> ClientConnection:
        if self._ws is None:
            raise RuntimeError("use the session with `async with`")
        return self._ws

    async def send(self, text: str, flush: bool = False) -> None:
        """A piece of the text as it is written (a token, a word, a sentence); the farm speaks each sentence as
        soon as it is complete. `flush`: speak what has come so far now."""
        if text or flush:
            await self._socket().send(json.dumps({"text": text, "flush": flush} if flush else {"text": text}))

    async def end(self) -> None:
        """The text is complete: what is left is said, then the audio ends."""
        await self._socket().send(json.dumps({"text": ""}))

    async def interrupt(self) -> None:
        """Stop now: the farm cancels what it has not said; the audio ends within one chunk."""
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._socket().close()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """The audio as it comes, until the end (or an interruption); a refusal raises FarmError."""
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self._socket():
                message = json.loads(raw)
                self.session_id = message.get("sessionId", self.session_id)
                if message.get("error"):
                    self.error = message
                    raise FarmError(int(message.get("status") or 400), str(message["error"]), message["message"])
                if alignment := message.get("alignment"):
                    self.spoken += "".join(alignment["chars"])
                if message.get("audio"):
                    yield base64.b64decode(message["audio"])
                if message.get("isFinal"):
                    return


def session_url(base_url: str, voice: str, output_format: str, language: str) -> str:
    """The socket's address for the farm at `base_url` (http -> ws, https -> wss)."""
    scheme, rest = base_url.split("://", 1)
    ws_scheme = "wss" if scheme == "https" else "ws"
    query = urlencode({"output_format": output_format, "language_code": language})
    return f"{ws_scheme}://{rest}/v1/text-to-speech/{quote(voice, safe='')}/stream-input?{query}"
