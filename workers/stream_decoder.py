"""Linear-cost streaming of XTTS's HiFi-GAN decoder.

coqui's `Xtts.inference_stream` re-decodes every latent generated so far at each chunk, so a sentence of n
chunks costs O(n^2) decoder work. The decoder is (1) linear interpolations along time (speed, x4 to the mel
frame rate, 22.05 -> 24 kHz) and (2) a convolutional HiFi-GAN whose receptive field is a few frames wide.
`StreamingDecoder` therefore

* computes the interpolations incrementally with the exact index arithmetic of `F.interpolate(mode="linear",
  align_corners=False, scale_factor=...)` over the *whole* sequence, emitting a frame only once both of its
  source frames are known, and
* runs HiFi-GAN on a span: the frames not yet emitted, plus `margin` frames of context on each side that
  are decoded again but thrown away. Frames within `margin` of the newest latent are held back until the
  next call, because their right context does not exist yet.

With a margin at least the receptive field, each output sample is computed from the same inputs as in
one-shot decoding, so the stream equals `hifigan_decoder(all_latents)` up to float rounding (the benchmark
reports the signal-to-noise ratio), with no cross-fades and no clicks at the joins.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# HiFi-GAN frames are 256 samples (upsample rates 8*8*2*2).
HOP = 256
# Context on each side of a decoded span, in HiFi-GAN frames. Measured: 12 frames reproduce one-shot
# decoding to float rounding (135 dB SNR); 8 frames give 118 dB, 4 frames 80 dB.
DEFAULT_MARGIN = 12


class LinearResampler:
    """Incremental `F.interpolate(x, scale_factor=sf, mode="linear")` along the last axis of a [C, T] input."""

    def __init__(self, scale_factor: float) -> None:
        self.scale_factor = scale_factor
        # PyTorch maps output j to source scale * (j + 0.5) - 0.5 with scale = 1/sf rounded to float32 and
        # the rest rounded once to float32 at the end (measured to match its CPU kernel to float rounding).
        self._scale = float(np.float32(1.0 / scale_factor))
        self._buffer: torch.Tensor | None = None  # input frames [C, n] starting at absolute index _base
        self._base = 0
        self._seen = 0  # input frames received
        self._done = 0  # output frames emitted

    def _source(self, j: np.ndarray) -> np.ndarray:
        src = (self._scale * (j.astype(np.float64) + 0.5) - 0.5).astype(np.float32)
        return np.maximum(src, np.float32(0.0))

    def push(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        """Add input frames [C, n]; return the output frames [C, m] that are now fully determined."""
        self._buffer = x if self._buffer is None else torch.cat([self._buffer, x], dim=1)
        self._seen += x.shape[1]
        n = self._seen
        if n == 0:
            return x
        out_total = math.floor(n * self.scale_factor)  # what F.interpolate would produce for n inputs
        # PyTorch copies the input unchanged when the output has the same length (a short sequence scaled
        # by a factor just above 1): hold everything back while that can still happen, then copy.
        if out_total == n:
            if not final:
                return x[:, :0]
            out = self._buffer[:, self._done - self._base :]
            self._done = n
            return out
        j = np.arange(self._done, out_total, dtype=np.int64)
        src = self._source(j)
        i0 = src.astype(np.int64)
        if final:
            i1 = np.where(i0 < n - 1, i0 + 1, i0)
        else:
            # A frame is final only once its right neighbour exists (later input could move the end clamp).
            keep = i0 + 1 <= n - 1
            j, src, i0 = j[keep], src[keep], i0[keep]
            i1 = i0 + 1
        lam1 = torch.from_numpy(np.clip(src - i0.astype(np.float32), 0.0, 1.0)).to(self._buffer)
        lam0 = 1.0 - lam1
        buf = self._buffer
        out = buf[:, torch.from_numpy(i0 - self._base)] * lam0 + buf[:, torch.from_numpy(i1 - self._base)] * lam1
        self._done += len(j)
        # Drop input frames no future output frame can read.
        if len(j):
            next_src = int(self._source(np.array([self._done]))[0])
            drop = max(0, min(next_src, n - 1) - self._base)
            if drop:
                self._buffer = self._buffer[:, drop:]
                self._base += drop
        return out


@dataclass(frozen=True)
class FrameSpan:
    """HiFi-GAN input frames to decode next, [C, stop - start], of which frames [emit_from, end) become audio.

    `final`: the span reaches the last frame of the segment, so it has no right margin and must be decoded
    exactly as it is; a non-final span may be right-padded (with anything) when decoded in a batch, because
    its last `margin` frames, at least the receptive field, are context whose audio is thrown away.
    """

    frames: torch.Tensor
    start: int
    emit_from: int
    end: int
    final: bool

    @property
    def length(self) -> int:
        return int(self.frames.shape[1])


class StreamingDecoder:
    """Decode XTTS GPT latents to 24 kHz audio chunk by chunk at a total cost close to one-shot decoding.

    `push` does it in one call. The scheduler uses the parts: `feed` latents, take the `next_span()` to
    decode, run HiFi-GAN on it (possibly batched with other segments' spans, see `decode_spans`), `accept` its audio.
    """

    def __init__(
        self,
        hifigan_decoder: Any,  # coqui's HifiDecoder (untyped)
        speaker_embedding: torch.Tensor,
        length_scale: float = 1.0,
        margin: int = DEFAULT_MARGIN,
    ) -> None:
        self.decoder = hifigan_decoder
        self.g = speaker_embedding
        self.margin = margin
        stages = []
        if length_scale != 1.0:
            stages.append(LinearResampler(length_scale))
        stages.append(LinearResampler(hifigan_decoder.ar_mel_length_compression / hifigan_decoder.output_hop_length))
        if hifigan_decoder.output_sample_rate != hifigan_decoder.input_sample_rate:
            stages.append(LinearResampler(hifigan_decoder.output_sample_rate / hifigan_decoder.input_sample_rate))
        self.stages = stages
        self._frames: torch.Tensor | None = None  # HiFi-GAN input frames [C, n] from absolute index _base
        self._base = 0
        self._total = 0  # frames produced by the interpolations so far
        self._emitted = 0  # frames whose audio was returned
        self._final = False

    @torch.inference_mode()
    def feed(self, latents: torch.Tensor, final: bool = False) -> None:
        """Add GPT latents [T, C] (`final`: the segment's last ones) through the interpolations."""
        x = latents.transpose(0, 1)
        for stage in self.stages:
            x = stage.push(x, final)
        self._frames = x if self._frames is None else torch.cat([self._frames, x], dim=1)
        self._total += x.shape[1]
        self._final = self._final or final

    @property
    def backlog(self) -> int:
        """HiFi-GAN frames fed but not decoded yet (those of a decode that was interrupted, among others)."""
        return self._total - self._emitted

    def next_span(self) -> FrameSpan | None:
        """The frames to decode for the audio that is now fully determined (None: nothing new yet)."""
        if self._frames is None:
            return None
        end = self._total if self._final else self._total - self.margin
        if end <= self._emitted:
            return None
        start = max(self._base, self._emitted - self.margin)
        stop = self._total if self._final else min(self._total, end + self.margin)
        frames = self._frames[:, start - self._base : stop - self._base]
        return FrameSpan(frames, start, self._emitted, end, self._final)

    def accept(self, span: FrameSpan, wav: torch.Tensor) -> torch.Tensor:
        """The new audio out of HiFi-GAN's output for `span` (1-D, starting at its first frame)."""
        audio = wav[(span.emit_from - span.start) * HOP : (span.end - span.start) * HOP]
        self._advance(span.end)
        return audio

    @torch.inference_mode()
    def push(self, latents: torch.Tensor, final: bool = False) -> torch.Tensor:
        """Add GPT latents [T, C]; return the new audio samples (1-D float tensor, possibly empty)."""
        self.feed(latents, final)
        span = self.next_span()
        if span is None:
            return latents.new_zeros(0)
        return self.accept(span, decode_spans(self.decoder, [span], [self.g])[0])

    @torch.inference_mode()
    def skip(self, latents: torch.Tensor) -> int:
        """Add latents whose audio was already delivered (a resumed segment replays them): the interpolations
        and the context advance as if they had been decoded, without running HiFi-GAN. Returns the number of
        samples skipped, which equals what `push` would have returned for them."""
        self.feed(latents)
        end = self._total - self.margin
        if end <= self._emitted:
            return 0
        skipped = (end - self._emitted) * HOP
        self._advance(end)
        return skipped

    def _advance(self, end: int) -> None:
        self._emitted = end
        # Keep only the left context the next span needs.
        assert self._frames is not None
        keep_from = max(self._base, self._emitted - self.margin)
        self._frames = self._frames[:, keep_from - self._base :]
        self._base = keep_from


class DecodeInterrupted(Exception):
    """`decode_spans` gave up half way because its `interrupt` said so: no audio came out, and since a span is only
    read (never consumed) until its audio is `accept`ed, decoding it again later gives the same audio."""


@torch.inference_mode()
def decode_spans(
    hifigan_decoder: Any,
    spans: list[FrameSpan],
    embeddings: list[torch.Tensor],
    interrupt: Callable[[], bool] | None = None,
) -> list[torch.Tensor]:
    """HiFi-GAN over several spans (each with its speaker embedding) in one batched call: non-final spans are
    right-padded with zeros to the longest (harmless: their right margin absorbs it); spans are batched only with
    spans of the same kind and, for final ones, the same length. Returns each span's audio (1-D, from its first
    frame). `interrupt` is asked before each of HiFi-GAN's convolutions; when it answers True the call stops there
    and raises DecodeInterrupted."""
    generator = hifigan_decoder.waveform_decoder
    with _interruptible(generator, interrupt):
        if len(spans) == 1:
            wav: torch.Tensor = generator(spans[0].frames.unsqueeze(0), g=embeddings[0])
            return [wav.reshape(-1)]
        length = max(span.length for span in spans)
        if any(span.final and span.length != length for span in spans):
            raise ValueError("a final span can only be batched with spans of its own length")
        frames = torch.stack([F.pad(span.frames, (0, length - span.length)) for span in spans])
        g = torch.cat([s.reshape(1, -1, 1) for s in embeddings])
        out: torch.Tensor = generator(frames, g=g)
        return [out[i].reshape(-1)[: span.length * HOP] for i, span in enumerate(spans)]


@contextlib.contextmanager
def _interruptible(generator: Any, interrupt: Callable[[], bool] | None) -> Iterator[None]:
    """While it lasts, `interrupt` is checked before every convolution of coqui's HifiganGenerator (about 80 in XTTS-v2;
    checking only before its 12 residual blocks left waits of 0.45 s on a CPU: the blocks of the second upsampling
    stage hold nearly half the work). The hooks sit on the shared model, so they act only on this thread's calls: a
    model shared by two schedulers (tests) stays theirs."""
    if interrupt is None:
        yield
        return
    owner = threading.get_ident()

    def check(_module: Any, _inputs: Any) -> None:
        if threading.get_ident() == owner and interrupt():
            raise DecodeInterrupted

    hooks = [module.register_forward_pre_hook(check) for module in _convolutions(generator)]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


@functools.cache  # one model per worker: its modules are walked once, not at every bulk decode
def _convolutions(generator: nn.Module) -> tuple[nn.Module, ...]:
    found = tuple(m for m in generator.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)))
    return found or (generator,)


def one_shot(
    hifigan_decoder: Any, latents: torch.Tensor, speaker_embedding: torch.Tensor, length_scale: float = 1.0
) -> torch.Tensor:
    """Reference: decode all latents [T, C] at once, exactly as `Xtts.inference` does."""
    x = latents.unsqueeze(0)
    if length_scale != 1.0:
        x = F.interpolate(x.transpose(1, 2), scale_factor=length_scale, mode="linear").transpose(1, 2)
    with torch.inference_mode():
        audio: torch.Tensor = hifigan_decoder(x, g=speaker_embedding).reshape(-1)
    return audio


def snr_db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """Signal-to-noise ratio of `estimate` against `reference`, in dB (inf when identical)."""
    n = min(len(reference), len(estimate))
    noise = (reference[:n] - estimate[:n]).double().pow(2).sum().item()
    signal = reference[:n].double().pow(2).sum().item()
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)
