"""Continuous batching of XTTS's GPT: many segments decode together, one batched forward pass per step.

`BatchedGPT` replaces coqui's `GPT.get_generator` stream (`TTS/tts/layers/xtts/stream_generator.py`) for
several independent sequences at once. Each sequence keeps its own prompt length, KV-cache row, sampling
parameters and random generator; sequences join at any step and leave at any step (finished or cancelled).

Design
------
*Inputs, as `GPT2InferenceModel.forward` builds them.* coqui feeds the GPT-2 stack (`gpt.gpt`) embeddings,
never token ids: the prompt is `[cond latents (1, N, D), text_embedding(t) + text_pos_embedding(t) for
t = [start_text] + text + [stop_text], mel_embedding(start_audio) + mel_pos_embedding[0]]`, and the audio token
generated at position k (1-based; start_audio is position 0) is fed as `mel_embedding(token) +
mel_pos_embedding[k]`. The GPT-2 stack's own position embeddings are null (zeros), so positions come only from
these learned embeddings: left padding with an attention mask leaves every real position exactly as it was.
The conditioning rows carry no position at all, so a prompt of N rows (32 from XTTS-v2's cloning, 65 in coqui's
official client's default speaker) is only a longer or shorter prompt, batched like any other.
A step's latent is `final_norm(last hidden state)` (what HiFi-GAN decodes) and its logits `mel_head(latent)`.

*Prefill alone, the last input pending.* `add` runs one sequence's prompt through the GPT by itself (no
padding, so no padded query position is ever computed: a fully masked query row turns into NaN in attention)
but stops one position short: the last input (start_audio, or the last replayed token) is the sequence's
*pending* input, run by the next batched `step` together with every other row's pending input. Joining is
then only a matter of KV-cache bookkeeping: the new row's `DynamicCache` keys/values and the batch's are
left-padded with zeros to a common length (attention mask 0 there) and concatenated along the batch axis.
Leaving selects the remaining rows (`DynamicCache.batch_select_indices`) and their mask rows, then trims
leading columns that have become padding for every row, so the batch does not keep paying for a long prompt
that is gone.

*Sampling, row by row, as Hugging Face does it for coqui's generate call.* transformers 5.22.2 builds, for
`do_sample=True`, the processors in this order: repetition penalty, min length / min new tokens (both ban the
stop token while fewer than `min_new_tokens` were generated), temperature, top-k, top-p; then softmax and
`torch.multinomial`. They are applied here on the whole batch with per-row parameters, element for element
the same float operations (a disabled processor is made an exact identity for its row). The repetition
penalty covers the token ids of that row's coqui `input_ids`: the prompt's fake ids (1, repeated, and
start_audio) and every generated token, replayed ones included; it depends only on which ids occurred, so
each row keeps a boolean "seen" vector instead of its ragged id list.

`top_p=1.0` skips the top-p filter entirely, as Hugging Face does: applied, it would also drop tokens whose
probability underflows to 0.

*Per-row generators.* Each sequence draws with its own `torch.Generator` (`sample_rows`: the Gumbel-max trick,
the noise of each row from its generator, one argmax for the batch, no host sync per row), so its random stream
does not depend on which other sequences share the batch or when they joined: a seeded sequence samples the same
tokens alone or batched (up to float rounding of the batched matmuls). A draw consumes one exponential variate
per vocabulary entry, exactly as `torch.multinomial` does for one sample, so a generator advances by the same
amount at every step: a batch of one seeded like coqui's global RNG draws coqui's tokens. No generator state is
saved with a segment: the scheduler seeds a resumed segment's generator afresh (the part's seed), so after the
replayed tokens a sampled segment draws different noise than the uninterrupted run would have (a different but
equally valid continuation: about 36 dB SNR between the two on the dev model); with top_k=1 it is the same.

*Attention to the text.* Each step also reports the text token the new position attended to most
(`StepOutput.text_focus`), for character timing: the alignment layers' c_attn outputs are caught by forward
hooks during the step's own forward pass, and their queries are multiplied with the keys the cache now holds (the
attention weights the model computes, whatever attention kernel ran), averaged over heads and layers.

*Replay.* A segment resumed after an interruption passes the audio tokens it had already generated: they are
teacher-forced through the prefill (not sampled), their latents are returned, and decoding continues from the
same state as the uninterrupted run (same positions, same repetition-penalty history, same length bounds).
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# coqui's fake prompt ids (`GPT.compute_embeddings`): every prompt position is the id 1, whatever it embeds.
PROMPT_FILLER_ID = 1


class XttsGPT(Protocol):
    """The parts of coqui's `TTS.tts.layers.xtts.gpt.GPT` (an `Xtts` model's `.gpt`) that decoding uses."""

    gpt: nn.Module  # the GPT-2 stack (transformers `GPT2Model`, null position embeddings)
    text_embedding: nn.Embedding
    text_pos_embedding: nn.Module  # LearnedPositionEmbeddings: `.emb` is an nn.Embedding
    mel_embedding: nn.Embedding
    mel_pos_embedding: nn.Module
    final_norm: nn.LayerNorm
    mel_head: nn.Linear
    start_text_token: int
    stop_text_token: int
    start_audio_token: int
    stop_audio_token: int
    max_gen_mel_tokens: int


@dataclass(frozen=True)
class Sampling:
    """One sequence's decoding parameters (defaults: the shipped XTTS-v2 config's).

    `top_k=0` and `top_p=1.0` disable those filters, as in Hugging Face. The bounds count generated audio
    tokens, replayed ones included; `max_new_tokens=None` means XTTS's own cap, `gpt.max_gen_mel_tokens`,
    which also caps a larger value (the learned audio position table ends there).
    """

    temperature: float = 0.75
    top_k: int = 50
    top_p: float = 0.85
    repetition_penalty: float = 5.0
    min_new_tokens: int | None = None
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class StepOutput:
    """What one step gave a sequence: the sampled audio token and the latent it was sampled from.

    As in coqui's stream, the step that samples the stop token is reported too (with its latent).
    `finished`: the sequence has left the batch (stop token sampled, or its length bound reached).
    """

    token: int
    latent: Tensor  # [D]
    finished: bool
    # The text token (index into the sequence's text tokens) this step's position attended to most, averaged over
    # the heads of the alignment layers (`alignment_layers`); None for a sequence without text tokens.
    text_focus: int | None = None


@dataclass
class _Seq:
    """Python-side state of one sequence; `BatchedGPT._seqs[i]` owns row i of every batch tensor."""

    key: Hashable
    sampling: Sampling
    generator: torch.Generator
    min_new: int
    max_new: int
    generated: int  # audio tokens generated so far (replayed ones included) = position of the pending input
    text_at: int = 0  # the prompt position of its first text token (after the conditioning rows and start_text)
    text_len: int = 0  # its text tokens


@dataclass
class _Rows:
    """Row-aligned tensors of the running batch. Invariant: `mask.shape[1]` == the cache's length."""

    cache: DynamicCache
    mask: Tensor  # [B, L] long: 1 where the cache column is a real position of that row, 0 for left padding
    pending: Tensor  # [B, D]: each row's next input embedding, not yet run through the GPT
    seen: Tensor  # [B, V] bool: token ids in that row's coqui `input_ids` (for the repetition penalty)

    def layers(self) -> list[DynamicLayer]:
        # GPT-2 gets a cache of DynamicLayer: plain [B, heads, L, head_dim] tensors that `update` grows by
        # concatenation, so they can be padded and re-stacked here between forward passes.
        layers = list(self.cache.layers)
        if not all(isinstance(layer, DynamicLayer) for layer in layers):
            raise TypeError(f"expected DynamicLayer cache layers, got {[type(la).__name__ for la in layers]}")
        return [layer for layer in layers if isinstance(layer, DynamicLayer)]

    def kv(self) -> list[tuple[Tensor, Tensor]]:
        kv = [(layer.keys, layer.values) for layer in self.layers()]
        return [(k, v) for k, v in kv if k is not None and v is not None]  # all set: the prefill filled them

    def set_kv(self, kv: list[tuple[Tensor, Tensor]]) -> None:
        for layer, (keys, values) in zip(self.layers(), kv, strict=True):
            layer.keys, layer.values = keys, values

    def extend(self, other: _Rows) -> None:
        """Append `other`'s rows, left-padding whichever side is shorter."""
        length = max(self.mask.shape[1], other.mask.shape[1])
        self.set_kv(
            [
                (
                    torch.cat([_left_pad(k, length, 2), _left_pad(ok, length, 2)]),
                    torch.cat([_left_pad(v, length, 2), _left_pad(ov, length, 2)]),
                )
                for (k, v), (ok, ov) in zip(self.kv(), other.kv(), strict=True)
            ]
        )
        self.mask = torch.cat([_left_pad(self.mask, length, 1), _left_pad(other.mask, length, 1)])
        self.pending = torch.cat([self.pending, other.pending])
        self.seen = torch.cat([self.seen, other.seen])

    def select(self, index: Tensor) -> None:
        """Keep only the rows in `index`, then drop the leading columns no remaining row uses."""
        self.cache.batch_select_indices(index)
        self.mask, self.pending, self.seen = self.mask[index], self.pending[index], self.seen[index]
        first_used = int(self.mask.any(dim=0).int().argmax())  # the last position is real for every row
        if first_used:
            self.mask = self.mask[:, first_used:]
            self.set_kv([(k[:, :, first_used:], v[:, :, first_used:]) for k, v in self.kv()])


def _left_pad(t: Tensor, length: int, dim: int) -> Tensor:
    missing = length - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


@dataclass(frozen=True)
class SamplingTensors:
    """The batch's sampling parameters as row-aligned tensors, arranged so a disabled filter is an exact no-op."""

    penalty: Tensor  # [B, 1] (x / 1.0 and x * 1.0 are exact)
    temperature: Tensor  # [B, 1] (x / 1.0 is exact)
    top_k: Tensor  # [B] long, 0 = off
    top_k_max: int  # largest enabled top_k, 0 when no row filters
    top_p_floor: Tensor  # [B, 1]: drop tokens whose ascending cumulative probability is <= this; -1 = off
    any_top_p: bool

    @classmethod
    def build(cls, samplings: Sequence[Sampling], vocab: int, device: torch.device) -> SamplingTensors:
        def column(values: list[float]) -> Tensor:
            # float64 -> float32 here rounds exactly as Hugging Face's python-float operands are rounded.
            return torch.tensor(values, dtype=torch.float32, device=device)[:, None]

        top_k = [min(s.top_k, vocab) for s in samplings]
        return cls(
            penalty=column([s.repetition_penalty for s in samplings]),
            temperature=column([s.temperature for s in samplings]),
            top_k=torch.tensor(top_k, dtype=torch.long, device=device),
            top_k_max=max(top_k),
            # HF compares with (1 - top_p) computed in double precision; cumulative probabilities are >= 0 > -1.
            top_p_floor=column([1 - s.top_p if s.top_p < 1 else -1.0 for s in samplings]),
            any_top_p=any(s.top_p < 1 for s in samplings),
        )


def process_scores(logits: Tensor, params: SamplingTensors, seen: Tensor, ban_stop: Tensor, stop_token: int) -> Tensor:
    """Hugging Face's sampling processors for coqui's generate call, each row with its own parameters.

    logits [B, V] float32; seen [B, V] bool; ban_stop [B] bool (fewer than min_new_tokens generated).
    Returns the scores `softmax` + `multinomial` sample from (filtered entries are -inf).
    """
    # RepetitionPenaltyLogitsProcessor: score < 0 ? score * p : score / p, on ids present in input_ids.
    penalized = torch.where(logits < 0, logits * params.penalty, logits / params.penalty)
    scores = torch.where(seen, penalized, logits)
    # MinLengthLogitsProcessor / MinNewTokensLengthLogitsProcessor: no stop token before the minimum length.
    scores[:, stop_token].masked_fill_(ban_stop, -float("inf"))
    # TemperatureLogitsWarper.
    scores = scores / params.temperature
    # TopKLogitsWarper: drop scores below the row's k-th largest (the k-th value is the same whatever k_max).
    if params.top_k_max:
        kth = torch.topk(scores, params.top_k_max, dim=-1).values.gather(1, (params.top_k.clamp(min=1) - 1)[:, None])
        kth = torch.where(params.top_k[:, None] > 0, kth, -float("inf"))
        scores = scores.masked_fill(scores < kth, -float("inf"))
    # TopPLogitsWarper (min_tokens_to_keep=1).
    if params.any_top_p:
        sorted_scores, order = torch.sort(scores, descending=False)
        drop_sorted = sorted_scores.softmax(dim=-1).cumsum(dim=-1) <= params.top_p_floor
        drop_sorted[:, -1] = False
        scores = scores.masked_fill(drop_sorted.scatter(1, order, drop_sorted), -float("inf"))
    return scores


def sample_rows(probs: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
    """One token per row of probs [B, V], row i drawn with generators[i]: [B] long, without a host sync.

    The Gumbel-max trick in its exponential form: argmax(p / E) with E ~ Exp(1) per entry is a draw from p
    (argmax(log p + G) with G = -log E Gumbel-distributed). It is exactly what `torch.multinomial(p, 1)` computes
    for one sample (aten's fast path: an `exponential_` of p's shape from the generator, a division, an argmax),
    so every row gets the very token, and its generator the very state, a per-row `torch.multinomial` would give:
    a row's draws do not depend on its neighbours, and a batch of one seeded like coqui's global RNG draws
    coqui's tokens. What it leaves out is `multinomial`'s check of p (a `.item()`, so one host sync per row per
    step on a GPU); the noise is drawn row by row (each from its own generator, queued without waiting) and
    one argmax serves the whole batch.
    """
    noise = torch.stack(
        [torch.empty_like(row).exponential_(generator=g) for row, g in zip(probs, generators, strict=True)]
    )
    return (probs / noise).argmax(dim=-1)


class BatchedGPT:
    """Continuous batching over XTTS's GPT: `add` sequences, call `step` until they finish, `remove` to cancel.

    Not thread-safe: one owner drives it. `gpt` must already be on `device`, in eval mode. Like coqui's stream,
    it runs under `torch.inference_mode()`: the latents it returns are inference tensors (use them without autograd).
    """

    def __init__(self, gpt: XttsGPT, device: torch.device | str, autocast_fp16: bool = False) -> None:
        # Typed loosely inside: nn.Module's attribute typing cannot see through `mel_pos_embedding.emb.weight`.
        self.gpt: Any = gpt
        self.device = torch.device(device)
        self.autocast_fp16 = autocast_fp16 and self.device.type == "cuda"  # fp16 autocast is a CUDA affair here
        self._vocab = int(gpt.mel_head.out_features)
        self._seqs: list[_Seq] = []
        self._rows: _Rows | None = None
        self._params: SamplingTensors | None = None  # rebuilt when the batch's membership changes

    def __len__(self) -> int:
        return len(self._seqs)

    def __contains__(self, key: object) -> bool:
        return any(seq.key == key for seq in self._seqs)

    # --- joining -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def add(
        self,
        key: Hashable,
        cond_latent: Tensor,
        text_tokens: Tensor,
        sampling: Sampling,
        generator: torch.Generator,
        replay: Sequence[int] = (),
    ) -> Tensor:
        """Prefill one sequence alone and make it part of the batch from the next `step` on.

        cond_latent [1, N, D] (N rows: 32 from XTTS-v2's cloning, any count); text_tokens [1, T] or [T] (XTTS
        tokenizer ids, without the start/stop text tokens). `replay`: audio tokens an earlier run of this segment
        already generated; they are teacher-forced, and their latents [len(replay), D] are returned (empty when
        there is none).
        """
        if key in self:
            raise KeyError(f"{key!r} is already decoding")
        if generator.device.type != self.device.type:
            raise ValueError(f"generator on {generator.device}, batch on {self.device}")
        replayed = [int(t) for t in replay]
        seq = self._new_seq(key, sampling, generator, replayed)
        seq.text_at, seq.text_len = int(cond_latent.shape[1]) + 1, int(text_tokens.numel())
        prefix = self._prompt_embeddings(cond_latent, text_tokens)
        audio = self._audio_embeddings(
            torch.tensor([self.gpt.start_audio_token, *replayed], device=self.device),
            torch.arange(len(replayed) + 1, device=self.device),
        )
        # Run everything but the last audio input; that one is the sequence's first batched step.
        hidden, cache = self._forward(torch.cat([prefix, audio[None, :-1]], dim=1), None, None)
        latents = self._latents(hidden[0, hidden.shape[1] - len(replayed) :])
        seen = torch.zeros(1, self._vocab, dtype=torch.bool, device=self.device)
        seen[0, [PROMPT_FILLER_ID, self.gpt.start_audio_token, *replayed]] = True
        row = _Rows(cache, torch.ones(1, hidden.shape[1], dtype=torch.long, device=self.device), audio[-1:], seen)
        self._join(seq, row)
        return latents

    def _new_seq(self, key: Hashable, sampling: Sampling, generator: torch.Generator, replay: list[int]) -> _Seq:
        cap = int(self.gpt.max_gen_mel_tokens)
        max_new = min(sampling.max_new_tokens or cap, cap)
        stop = int(self.gpt.stop_audio_token)
        if len(replay) >= max_new or stop in replay:
            raise ValueError(f"the replayed {len(replay)} tokens already complete {key!r} (max {max_new} tokens)")
        if any(not 0 <= t < self._vocab for t in replay):
            raise ValueError(f"replayed tokens must be audio token ids in [0, {self._vocab})")
        return _Seq(key, sampling, generator, sampling.min_new_tokens or 0, max_new, generated=len(replay))

    def _join(self, seq: _Seq, row: _Rows) -> None:
        if self._rows is None:
            self._rows = row
        else:
            self._rows.extend(row)
        self._seqs.append(seq)
        self._params = None

    # --- decoding ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> dict[Hashable, StepOutput]:
        """One batched forward pass: every sequence in the batch gets its next token (none when empty)."""
        rows = self._rows
        if rows is None:
            return {}
        mask = torch.cat([rows.mask, rows.mask.new_ones(len(self._seqs), 1)], dim=1)
        with self._queries() as queries:
            hidden, rows.cache = self._forward(rows.pending[:, None], mask, rows.cache)
        rows.mask = mask
        focus = self._text_focus(queries, rows)
        latents = self._latents(hidden[:, -1])
        tokens = self._sample(self._logits(latents), rows.seen)
        rows.seen[torch.arange(len(tokens), device=self.device), tokens] = True
        # One transfer to the host for both (on a GPU each .tolist() waits for the device).
        token_list, focus_list = torch.stack([tokens, focus.to(tokens.dtype)]).tolist()
        outputs: dict[Hashable, StepOutput] = {}
        keep: list[int] = []
        for i, (seq, token) in enumerate(zip(self._seqs, token_list, strict=True)):
            seq.generated += 1
            finished = token == self.gpt.stop_audio_token or seq.generated >= seq.max_new
            outputs[seq.key] = StepOutput(token, latents[i], finished, focus_list[i] if seq.text_len else None)
            if not finished:
                keep.append(i)
        self._keep(keep)
        if self._rows is not None:
            positions = torch.tensor([seq.generated for seq in self._seqs], device=self.device)
            self._rows.pending = self._audio_embeddings(tokens[keep], positions)
        return outputs

    def _sample(self, logits: Tensor, seen: Tensor) -> Tensor:
        if self._params is None:
            self._params = SamplingTensors.build([s.sampling for s in self._seqs], self._vocab, self.device)
        ban_stop = torch.tensor([s.generated < s.min_new for s in self._seqs], device=self.device)
        scores = process_scores(logits, self._params, seen, ban_stop, int(self.gpt.stop_audio_token))
        return sample_rows(scores.softmax(dim=-1), [s.generator for s in self._seqs])

    # --- attention to the text ------------------------------------------------------------------------
    @property
    def alignment_layers(self) -> range:
        """The layers whose attention from audio to text is read: the middle third of the stack. A choice, not a
        measurement: the random weights here cannot say which layers of XTTS-v2 align best; the cursor
        (shared.alignment.AttentionCursor) refuses whatever does not read as an alignment."""
        n = len(self.gpt.gpt.h)
        return range(n // 3, max(n // 3 + 1, 2 * n // 3))

    @contextlib.contextmanager
    def _queries(self) -> Iterator[dict[int, Tensor]]:
        """Catch the alignment layers' query/key/value projections of the positions a forward pass runs (forward
        hooks on `attn.c_attn`, removed after), so that their attention can be read without a second pass."""
        caught: dict[int, Tensor] = {}
        handles = [
            self.gpt.gpt.h[layer].attn.c_attn.register_forward_hook(
                lambda _m, _i, out, layer=layer: caught.__setitem__(layer, out)
            )
            for layer in self.alignment_layers
        ]
        try:
            yield caught
        finally:
            for handle in handles:
                handle.remove()

    def _text_focus(self, queries: dict[int, Tensor], rows: _Rows) -> Tensor:
        """[B], on the device: each row's text token that its newest position attends to most: the attention weights
        of the alignment layers (softmax over every real position of the row, as the model computes them), averaged
        over their heads and layers, compared over the row's text tokens (0 for a row without any)."""
        if not queries or not any(seq.text_len for seq in self._seqs):
            return torch.zeros(len(self._seqs), dtype=torch.long, device=self.device)
        weights = torch.stack([self._attention(layer, qkv, rows) for layer, qkv in queries.items()]).mean(dim=0)
        length = rows.mask.shape[1]
        offsets = length - rows.mask.sum(dim=1)  # each row's left padding
        widest = max(seq.text_len for seq in self._seqs)
        first = torch.tensor([seq.text_at for seq in self._seqs], device=self.device) + offsets
        count = torch.tensor([max(seq.text_len, 1) for seq in self._seqs], device=self.device)
        steps = torch.arange(widest, device=self.device)
        columns = first[:, None] + torch.minimum(steps[None, :], count[:, None] - 1)
        text = weights.gather(1, columns).masked_fill(steps[None, :] >= count[:, None], -1.0)
        return text.argmax(dim=1)

    def _attention(self, layer: int, qkv: Tensor, rows: _Rows) -> Tensor:
        """[B, L]: layer `layer`'s attention weights from each row's newest position, averaged over its heads."""
        attn = self.gpt.gpt.h[layer].attn
        heads, width = int(attn.num_heads), int(attn.head_dim)
        keys = rows.layers()[layer].keys
        assert keys is not None  # the forward pass just filled it
        query = qkv[:, -1, : attn.embed_dim].to(keys.dtype).view(len(self._seqs), heads, 1, width)
        # In the cache's own precision, as the model computes it; only the small [B, heads, 1, L] scores in float32.
        scores = (query @ keys.transpose(-1, -2)).float() * float(attn.scaling)
        scores = scores.masked_fill(rows.mask[:, None, None, :] == 0, float("-inf"))
        weights: Tensor = scores.softmax(dim=-1).mean(dim=1)[:, 0]
        return weights

    # --- leaving -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def remove(self, key: Hashable) -> None:
        """Cancel a sequence: it leaves the batch at once."""
        index = next((i for i, seq in enumerate(self._seqs) if seq.key == key), None)
        if index is None:
            raise KeyError(key)
        self._keep([i for i in range(len(self._seqs)) if i != index])

    def _keep(self, keep: list[int]) -> None:
        if len(keep) == len(self._seqs):
            return
        self._seqs = [self._seqs[i] for i in keep]
        self._params = None
        if not keep:
            self._rows = None  # drop the whole cache; the next `add` starts a fresh one
        elif self._rows is not None:
            self._rows.select(torch.tensor(keep, device=self.device))

    # --- the model's pieces --------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_fp16:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _prompt_embeddings(self, cond_latent: Tensor, text_tokens: Tensor) -> Tensor:
        """`GPT.compute_embeddings` without its side effect (it stores the prefix on the shared inference model)."""
        gpt = self.gpt
        tokens = text_tokens.reshape(1, -1).to(self.device)
        tokens = nn.functional.pad(tokens, (0, 1), value=gpt.stop_text_token)
        tokens = nn.functional.pad(tokens, (1, 0), value=gpt.start_text_token)
        text = gpt.text_embedding(tokens) + gpt.text_pos_embedding(tokens)
        return torch.cat([cond_latent.to(self.device), text], dim=1)

    def _audio_embeddings(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """[n, D]: audio token embeddings at their positions, as `GPT2InferenceModel.forward` adds them."""
        embeddings: Tensor = self.gpt.mel_embedding(tokens) + self.gpt.mel_pos_embedding.emb.weight[positions]
        return embeddings

    def _forward(self, embeds: Tensor, mask: Tensor | None, cache: DynamicCache | None) -> tuple[Tensor, DynamicCache]:
        with self._autocast():
            out = self.gpt.gpt(inputs_embeds=embeds, attention_mask=mask, past_key_values=cache, use_cache=True)
        return out.last_hidden_state, out.past_key_values

    def _latents(self, hidden: Tensor) -> Tensor:
        """What HiFi-GAN decodes: coqui's `final_norm(hidden_states[-1])`."""
        with self._autocast():
            latents: Tensor = self.gpt.final_norm(hidden)
        return latents

    def _logits(self, latents: Tensor) -> Tensor:
        """coqui's `lm_head` = mel_head(final_norm(.)), taken in float32 as its sampling loop does."""
        with self._autocast():
            logits: Tensor = self.gpt.mel_head(latents)
        return logits.float()
