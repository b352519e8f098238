"""The XTTS engine: one model per worker process, loaded once and injected into the tasks that use it.

Synthesis goes through `workers.scheduler.BatchScheduler`: XTTS's own GPT driven in a continuous batch
(`workers.batched_gpt`), decoded with `StreamingDecoder`, whose total cost stays close to one-shot decoding
however long the segment.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shared.alignment import token_char_ends
from shared.audio import SAMPLE_RATE
from shared.params import SynthesisParams
from shared.settings import Settings
from shared.streams import Delivered
from workers.batched_gpt import Sampling
from workers.errors import SynthesisError
from workers.model_source import ModelSource, fingerprint, resolve
from workers.scheduler import BatchScheduler, Part, Segment
from workers.stream_decoder import DEFAULT_MARGIN

log = logging.getLogger(__name__)

# The dev model's noise never emits the stop token; give it the length real speech would have
# (about 21.5 audio tokens per second of speech, 14 characters per second).
DEV_TOKENS_PER_CHAR = 1.5


# Digits XTTS's cleaners leave alone ([0-9] only are spelled, by num2words), for a language num2words lacks.
NATIVE_DIGITS = {"hi": "०१२३४५६७८९"}
FULLWIDTH_DIGITS = "０１２３４５６７８９"


@dataclass(frozen=True)
class VoiceLatents:
    """What XTTS conditions on: GPT latents [1, rows, width] (32 rows from XTTS-v2's cloning) and a speaker
    embedding [1, 512, 1]."""

    gpt_cond_latent: torch.Tensor
    speaker_embedding: torch.Tensor

    def to(self, device: str | torch.device) -> VoiceLatents:
        """Both tensors on `device` (the engine's: the model takes its inputs there)."""
        return VoiceLatents(self.gpt_cond_latent.to(device), self.speaker_embedding.to(device))


def pcm16(wav: torch.Tensor) -> bytes:
    """Float audio in [-1, 1] to 16-bit little-endian PCM."""
    return (wav.detach().float().clamp(-1.0, 1.0) * 32767.0).round().to(torch.int16).cpu().numpy().tobytes()


def exact_float32() -> None:
    """No TF32 anywhere in this process: float32 convolutions and matmuls in full float32 on a GPU.

    Call it where float32 results are compared down to rounding (the tests' engine, the benchmark's fidelity
    figures, the GPU check): TF32, which cuDNN uses for float32 convolutions by default on Ampere and later GPUs,
    keeps 10 mantissa bits of the inputs, about 1e-3 relative error per product, which alone would take the SNR
    between windowed and one-shot HiFi-GAN decoding (asserted above 120 dB) and the batched-versus-alone latents
    (asserted within 1e-4) past their bounds on a GPU. Serving keeps torch's defaults (TF32 convolutions, float32
    matmuls): that rounding is far below what a listener can hear, and float16 serving rounds more anyway.
    On the CPU neither flag changes anything."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def choose_device(settings: Settings, cuda_available: bool) -> str:
    """A GPU when there is one, unless USE_CPU says to stay on the CPU."""
    return "cuda" if cuda_available and not settings.USE_CPU else "cpu"


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
    def load(cls, settings: Settings, source: ModelSource | None = None) -> XttsEngine:
        """Load the checkpoint `source` names (resolved from the settings when not given: a worker resolves it
        once, before it loads, to stop early with a clear reason when there is none)."""
        from transformers.utils import logging as transformers_logging
        from TTS.tts.configs.xtts_config import XttsConfig
        from TTS.tts.models.xtts import Xtts

        # transformers prints through a handler of its own: send its records to the farm's (shared/logs.py) instead.
        transformers_logging.disable_default_handler()
        transformers_logging.enable_propagation()

        torch.set_num_threads(max(1, settings.NUM_THREADS))
        source = source or resolve(settings)
        device = choose_device(settings, torch.cuda.is_available())
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
    @functools.cached_property
    def fingerprint(self) -> str:
        """What this engine's audio depends on beyond a request: the checkpoint, and how it runs (a GPU's kernels
        and float16 give other samples than the CPU's)."""
        return f"{fingerprint(self.source.path)}:{self.device.split(':')[0]}:{'fp16' if self.fp16 else 'fp32'}"

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
            "torch_threads": torch.get_num_threads(),  # NUM_THREADS, as torch took it
        }

    # --- synthesis -------------------------------------------------------------------------------------
    def new_scheduler(self, max_batch: int) -> BatchScheduler:
        return BatchScheduler(self.model, self.device, max_batch, fp16=self.fp16, decode_context=self.decode_context)

    def segment(
        self,
        key: Hashable,
        text: str,
        language: str,
        voice: VoiceLatents,
        params: SynthesisParams,
        seed: int,
        resume: Delivered | None = None,
        *,
        live: bool = True,
        deadline: float | None = None,
    ) -> Segment:
        """What the scheduler needs to synthesize one segment; `resume`: what an earlier run delivered; `live`: a
        listener waits for it (else it yields its batch slot to live segments); `deadline`: when (time.monotonic())
        that listener runs out of earlier audio (None: as soon as possible)."""
        parts, at = [], 0
        for number, (part_text, ids) in enumerate(self._token_parts(text, language)):
            done = resume is not None and number in resume.parts_ended
            replay = tuple(resume.tokens.get(number, ())) if resume is not None and not done else ()
            char_ends, at = self._char_ends(text, part_text, ids, at)
            tokens = torch.IntTensor(ids).unsqueeze(0).to(self.device)
            parts.append(Part(tokens, self._sampling(part_text, params), seed + number, replay, done, char_ends))
        voice = voice.to(self.device)
        return Segment(
            key,
            tuple(parts),
            voice.gpt_cond_latent,
            voice.speaker_embedding,
            chunk_tokens=params.stream_chunk_size,
            length_scale=1.0 / params.speed,
            live=live,
            deadline=deadline,
        )

    def _sampling(self, text: str, params: SynthesisParams) -> Sampling:
        """The request's sampling parameters (length_penalty only matters to beam search, which XTTS's
        sampling never uses). The dev model's noise never emits the stop token: it gets the length real speech
        of this text would have unless the request bounds it."""
        min_new, max_new = params.min_new_tokens, params.max_new_tokens
        if self.source.dev and not (min_new or max_new):
            n = int(min(self.model.args.gpt_max_audio_tokens, max(8, round(len(text) * DEV_TOKENS_PER_CHAR))))
            min_new = max_new = n
        return Sampling(
            temperature=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            repetition_penalty=params.repetition_penalty,
            min_new_tokens=min_new,
            max_new_tokens=max_new,
        )

    def _char_ends(self, text: str, part_text: str, ids: list[int], after: int) -> tuple[tuple[int, ...] | None, int]:
        """The characters of the segment's `text` said after each of a part's text tokens (the part found in the
        text from `after` on), and where the part ends; None where they do not map (timing then by estimate)."""
        said = part_text.strip()
        start = text.find(said, after)
        if start < 0 or not said:
            return None, after
        vocabulary = self.model.tokenizer.tokenizer
        ends = token_char_ends([vocabulary.id_to_token(i) or "" for i in ids], said)
        return (None if ends is None else tuple(start + e for e in ends)), start + len(said)

    def _encode(self, text: str, lang: str) -> list[int]:
        """XTTS's tokens for `text`. Its cleaners spell digits with num2words, which cannot in some of XTTS's
        languages (Hindi): there the digits go to the tokenizer as the language's own (the farm's normalisation
        spells numbers only in the languages it has words for), instead of failing the segment."""
        try:
            return list(self.model.tokenizer.encode(text, lang=lang))
        except NotImplementedError:
            native = str.maketrans("0123456789", NATIVE_DIGITS.get(lang, FULLWIDTH_DIGITS))
            return list(self.model.tokenizer.encode(text.translate(native), lang=lang))

    def _token_parts(self, text: str, language: str) -> list[tuple[str, list[int]]]:
        """Text tokens for a segment, split further if XTTS's cleaners made it too long for the GPT
        (numbers and abbreviations expand: "1999" becomes "one thousand nine hundred ninety-nine")."""
        tokens = self._encode(text.strip().lower(), language.split("-", maxsplit=1)[0])
        if len(tokens) < self.model.args.gpt_max_text_tokens:
            return [(text, list(tokens))]
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

    def synthesize_chunks(
        self, text: str, language: str, voice: VoiceLatents, params: SynthesisParams, seed: int = 0
    ) -> Iterator[torch.Tensor]:
        """Float audio chunks (24 kHz mono) of one segment, synthesized alone by a scheduler this call drives
        (the same code path a worker's batch runs)."""
        scheduler = self.new_scheduler(max_batch=1)
        handle = scheduler.submit(self.segment("alone", text, language, voice, params, seed), synchronous=True)
        for chunk in handle.events():
            if chunk.audio.numel():
                yield chunk.audio

    def synthesize(
        self, text: str, language: str, voice: VoiceLatents, params: SynthesisParams, seed: int = 0
    ) -> np.ndarray:
        """A whole segment as one array (the same path as streaming, joined)."""
        chunks = list(self.synthesize_chunks(text, language, voice, params, seed))
        return torch.cat(chunks).cpu().numpy() if chunks else np.zeros(0, dtype=np.float32)
