"""The XTTS engine: one model per worker process, loaded once and injected into the tasks that use it.

Synthesis runs coqui's own GPT (`Xtts.gpt.get_generator`, as `Xtts.inference_stream` does) and decodes
with `StreamingDecoder`, whose total cost stays close to one-shot decoding however long the segment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shared.audio import SAMPLE_RATE
from shared.params import SynthesisParams
from shared.settings import Settings
from workers.errors import SynthesisError
from workers.model_source import ModelSource, resolve
from workers.stream_decoder import DEFAULT_MARGIN, StreamingDecoder

log = logging.getLogger(__name__)

# The dev model's noise never emits the stop token; give it the length real speech would have
# (about 21.5 audio tokens per second of speech, 14 characters per second).
DEV_TOKENS_PER_CHAR = 1.5
# Later chunks of a segment may grow up to this many times `stream_chunk_size`: each decode re-runs
# the decoder's context margin, so fewer, larger windows cost less once the listener has audio buffered.
MAX_CHUNK_GROWTH = 4


@dataclass(frozen=True)
class VoiceLatents:
    """What XTTS conditions on: GPT latents [1, 32, width] and a speaker embedding [1, 512, 1]."""

    gpt_cond_latent: torch.Tensor
    speaker_embedding: torch.Tensor


def pcm16(wav: torch.Tensor) -> bytes:
    """Float audio in [-1, 1] to 16-bit little-endian PCM."""
    return (wav.detach().float().clamp(-1.0, 1.0) * 32767.0).round().to(torch.int16).cpu().numpy().tobytes()


class XttsEngine:
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        model: Any,
        source: ModelSource,
        device: str,
        load_seconds: float,
        fp16: bool,
        decode_context: int = DEFAULT_MARGIN,
    ) -> None:
        self.model = model
        self.source = source
        self.device = device
        self.load_seconds = load_seconds
        self.fp16 = fp16
        self.decode_context = decode_context
        manager = getattr(model, "speaker_manager", None)
        self._speakers: dict[str, dict[str, torch.Tensor]] = dict(manager.speakers) if manager else {}

    # --- loading ---------------------------------------------------------------------------------------
    @classmethod
    def load(cls, settings: Settings) -> XttsEngine:
        from TTS.tts.configs.xtts_config import XttsConfig
        from TTS.tts.models.xtts import Xtts

        torch.set_num_threads(max(1, settings.NUM_THREADS))
        source = resolve(settings)
        device = "cuda" if torch.cuda.is_available() and not settings.USE_CPU else "cpu"
        started = time.perf_counter()
        config = XttsConfig()
        config.load_json(str(source.path / "config.json"))
        model = Xtts(config)
        model.load_checkpoint(config, checkpoint_dir=str(source.path), eval=True)
        model.to(device)
        fp16 = settings.USE_FP16 and device == "cuda"
        engine = cls(model, source, device, time.perf_counter() - started, fp16, settings.STREAM_DECODE_CONTEXT)
        log.info("XTTS model %s loaded from %s on %s in %.1f s", source.name, source.path, device, engine.load_seconds)
        if source.dev:
            log.warning(
                "model %s has RANDOM WEIGHTS: it produces noise, not speech (for tests and offline runs)", source.name
            )
        return engine

    # --- what the model offers -----------------------------------------------------------------------
    @property
    def languages(self) -> list[str]:
        return list(self.model.config.languages)

    @property
    def speaker_names(self) -> list[str]:
        return sorted(self._speakers)

    @property
    def gpt_width(self) -> int:
        return int(self.model.args.gpt_n_model_channels)

    def builtin_voice(self, name: str) -> VoiceLatents | None:
        entry = self._speakers.get(name)
        if entry is None:
            return None
        return VoiceLatents(entry["gpt_cond_latent"], entry["speaker_embedding"])

    def info(self) -> dict[str, Any]:
        return {
            "name": self.source.name,
            "path": str(self.source.path),
            "dev_random_weights": self.source.dev,
            "device": self.device,
            "dtype": "float16" if self.fp16 else "float32",
            "load_seconds": round(self.load_seconds, 2),
            "sample_rate": self.sample_rate,
        }

    # --- synthesis -------------------------------------------------------------------------------------
    def _generate_kwargs(self, text: str, params: SynthesisParams) -> dict[str, int]:
        kwargs = {}
        if params.min_new_tokens:
            kwargs["min_new_tokens"] = params.min_new_tokens
        if params.max_new_tokens:
            kwargs["max_new_tokens"] = params.max_new_tokens
        if self.source.dev and not kwargs:
            n = int(min(self.model.args.gpt_max_audio_tokens, max(8, round(len(text) * DEV_TOKENS_PER_CHAR))))
            kwargs = {"min_new_tokens": n, "max_new_tokens": n}
        return kwargs

    def _token_parts(self, text: str, language: str) -> list[tuple[str, torch.Tensor]]:
        """Text tokens for a segment, split further if XTTS's cleaners made it too long for the GPT
        (numbers and abbreviations expand: "1999" becomes "one thousand nine hundred ninety-nine")."""
        tokens = self.model.tokenizer.encode(text.strip().lower(), lang=language.split("-", maxsplit=1)[0])
        if len(tokens) < self.model.args.gpt_max_text_tokens:
            return [(text, torch.IntTensor(tokens).unsqueeze(0).to(self.device))]
        words = text.split()
        if len(words) > 1:
            halves = [" ".join(words[: len(words) // 2]), " ".join(words[len(words) // 2 :])]
        elif len(text) > 1:
            halves = [text[: len(text) // 2], text[len(text) // 2 :]]
        else:
            raise SynthesisError(
                f"{text!r} expands to {len(tokens)} text tokens; XTTS takes fewer than "
                f"{self.model.args.gpt_max_text_tokens}"
            )
        return [part for half in halves for part in self._token_parts(half, language)]

    def _autocast(self) -> Any:
        return torch.autocast("cuda", dtype=torch.float16) if self.fp16 else torch.autocast("cpu", enabled=False)

    @torch.inference_mode()
    def stream(
        self, text: str, language: str, voice: VoiceLatents, params: SynthesisParams, seed: int | None = None
    ) -> Iterator[torch.Tensor]:
        """Yield float audio chunks (24 kHz mono) for one segment as the GPT produces them."""
        parts = self._token_parts(text, language)
        if seed is not None:
            torch.manual_seed(seed)
        cond = voice.gpt_cond_latent.to(self.device)
        embedding = voice.speaker_embedding.to(self.device)
        for part_text, text_tokens in parts:
            yield from self._stream_part(part_text, text_tokens, cond, embedding, params)

    def _stream_part(
        self, text: str, text_tokens: torch.Tensor, cond: torch.Tensor, embedding: torch.Tensor, params: SynthesisParams
    ) -> Iterator[torch.Tensor]:
        gpt = self.model.gpt
        with self._autocast():
            fake_inputs = gpt.compute_embeddings(cond, text_tokens)
            generator = gpt.get_generator(
                fake_inputs=fake_inputs,
                top_k=params.top_k,
                top_p=params.top_p,
                temperature=params.temperature,
                do_sample=True,
                num_beams=1,
                num_return_sequences=1,
                length_penalty=float(params.length_penalty),
                repetition_penalty=float(params.repetition_penalty),
                output_attentions=False,
                output_hidden_states=True,
                return_dict_in_generate=True,
                **self._generate_kwargs(text, params),
            )
            decoder = StreamingDecoder(
                self.model.hifigan_decoder, embedding, length_scale=1.0 / params.speed, margin=self.decode_context
            )
            pending: list[torch.Tensor] = []
            target = params.stream_chunk_size
            max_target = params.stream_chunk_size * MAX_CHUNK_GROWTH
            for _token, latent in generator:
                pending.append(latent.float())
                if len(pending) >= target:
                    wav = decoder.push(torch.cat(pending, dim=0), final=False)
                    pending, target = [], min(target * 2, max_target)
                    if wav.numel():
                        yield wav
            tail = torch.cat(pending, dim=0) if pending else cond.new_zeros(0, self.gpt_width).float()
            wav = decoder.push(tail, final=True)
            if wav.numel():
                yield wav

    def synthesize(
        self, text: str, language: str, voice: VoiceLatents, params: SynthesisParams, seed: int | None = None
    ) -> np.ndarray:
        """A whole segment as one array (the same path as streaming, joined)."""
        chunks = list(self.stream(text, language, voice, params, seed))
        return torch.cat(chunks).cpu().numpy() if chunks else np.zeros(0, dtype=np.float32)
