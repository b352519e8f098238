"""The document GET /studio_speakers serves: every built-in speaker of the loaded model with its latents, in the
official XTTS server's shape, `{name: {"speaker_embedding": [512], "gpt_cond_latent": [[width] x 32]}}`.

Built on the worker (the API has no model) and published through Redis (`shared.studio_speakers`). The numbers
are written as the shortest decimals that read back as the same float32 values (the official server rounds them
to float16), so a client that sends them back to /tts gets the very voice the speaker's name gives; for XTTS-v2's
58 speakers that is about 23 MB of JSON, built in a few seconds off the worker's serving path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading

import numpy as np
import redis

from shared import studio_speakers
from workers.engine import VoiceLatents, XttsEngine

log = logging.getLogger(__name__)

FORMAT = b"studio-speakers/1"  # part of the digest: a change of the document's form is a new document


def _floats(values: np.ndarray) -> str:
    return "[" + ",".join(values.astype(str)) + "]"


def _arrays(voice: VoiceLatents) -> tuple[np.ndarray, np.ndarray]:
    """(gpt_cond_latent [32, width], speaker_embedding [512]) as float32, squeezed as the official server does."""
    gpt = voice.gpt_cond_latent.detach().float().cpu().numpy()
    embedding = voice.speaker_embedding.detach().float().cpu().numpy()
    return np.ascontiguousarray(gpt.reshape(-1, gpt.shape[-1])), np.ascontiguousarray(embedding.reshape(-1))


class StudioSpeakers:
    """The model's built-in speakers: their digest at once, their JSON document when it has to be written."""

    def __init__(self, voices: dict[str, VoiceLatents]) -> None:
        self._voices = voices
        digest = hashlib.sha256(FORMAT)
        for name in sorted(voices):
            gpt, embedding = _arrays(voices[name])
            digest.update(json.dumps(name).encode() + str(gpt.shape).encode() + gpt.tobytes() + embedding.tobytes())
        self.digest = digest.hexdigest()

    @classmethod
    def of(cls, engine: XttsEngine) -> StudioSpeakers:
        voices = {name: voice for name in engine.speaker_names if (voice := engine.builtin_voice(name)) is not None}
        return cls(voices)

    def document(self) -> bytes:
        parts = []
        for name in sorted(self._voices):
            gpt, embedding = _arrays(self._voices[name])
            rows = ",".join(_floats(row) for row in gpt)
            parts.append(f'{json.dumps(name)}:{{"speaker_embedding":{_floats(embedding)},"gpt_cond_latent":[{rows}]}}')
        return ("{" + ",".join(parts) + "}").encode()

    def ensure_published(self, r: redis.Redis) -> bool:
        """Renew the published document, or write it if Redis does not have it; True when it was written."""
        if studio_speakers.refresh(r, self.digest):
            return False
        studio_speakers.publish(r, self.digest, self.document())
        log.info("published the latents of %d built-in speakers (%s)", len(self._voices), self.digest[:12])
        return True

    def keep_published(self, r: redis.Redis, stop: threading.Event) -> None:
        """The worker's loop: publish now, then renew every REFRESH_SECONDS until `stop`."""
        while True:
            try:
                self.ensure_published(r)
            except redis.RedisError:  # Redis away: the next round tries again
                log.warning("could not publish the built-in speakers' latents; retrying", exc_info=True)
            if stop.wait(studio_speakers.REFRESH_SECONDS):
                return
