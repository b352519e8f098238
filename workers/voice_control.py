"""The worker's voice cache, kept in step with the API's voice-control messages (`shared.voice_control`).

`clear` empties the cache; a generation counter in Redis, compared before every segment (`VoiceControl.sync`),
clears it even when the message was missed (reconnecting, busy). `evict:<id>` drops a deleted or overwritten saved
voice at once; correctness never depends on it, since cache keys carry the voice's revision.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from shared.redis_client import get_redis
from shared.voice_control import CHANNEL, current_generation
from voices_store.cache import VoiceCache
from workers.engine import VoiceLatents
from workers.voices import is_voice

log = logging.getLogger(__name__)


class VoiceControl:
    """The process's voice cache and the generation of the last clear it applied. `on_change` runs after the cache
    changed (the runtime publishes the worker's registry entry, which shows the cache)."""

    def __init__(self, cache: VoiceCache[VoiceLatents], on_change: Callable[[], None]) -> None:
        self.cache = cache
        self.generation = 0
        self._on_change = on_change

    def start(self) -> None:
        """A new process has nothing to clear: it starts at the current generation."""
        self.generation = current_generation(get_redis())

    def sync(self) -> None:
        """Clear the cache if a clear was requested since we last looked (a missed message included)."""
        generation = current_generation(get_redis())
        if generation > self.generation:
            self._clear(generation)

    def _clear(self, generation: int) -> None:
        self.cache.clear()
        self.generation = max(self.generation, generation)
        log.info("voice cache cleared (generation %d)", self.generation)
        self._on_change()

    def handle(self, message: str) -> None:
        kind, _, arg = message.partition(":")
        if kind == "clear":
            self._clear(int(arg))
        elif kind == "evict" and self.cache.invalidate(is_voice(arg)):
            self._on_change()

    def listen(self, stop: threading.Event) -> None:
        """The voice-control thread: apply every message until `stop`; resubscribe after a pause if Redis goes."""
        while not stop.is_set():
            try:
                pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                self.sync()  # anything sent while we were not subscribed
                while not stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message["type"] == "message":
                        self.handle(message["data"].decode())
            except Exception:  # Redis away: resubscribe after a pause
                log.warning("voice control listener lost Redis; retrying", exc_info=True)
                stop.wait(1.0)
