"""Batched GPT decoding gives each sequence what coqui's own generator gives it alone (real dev checkpoint)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import cast

import pytest
import torch
from transformers import LogitsProcessorList
from transformers.generation.logits_process import (
    MinNewTokensLengthLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from workers.batched_gpt import BatchedGPT, Sampling, SamplingTensors, StepOutput, process_scores
from workers.engine import XttsEngine

TEXTS = (
    "Hello world.",
    "A much longer sentence, with many more words in it than the first one has.",
    "Hi.",
    "A text of medium length here.",
)
JOIN_AFTER = (0, 3, 7, 12)  # steps the batch has run when each text joins
LENGTHS = (30, 45, 22, 38)  # generated tokens per text (the random model never stops by itself)
REAL = Sampling(temperature=0.75, top_k=50, top_p=0.85, repetition_penalty=5.0)
# Latents of a sequence batched, replayed or alone differ by float rounding only: measured 4.8e-7 at most (a few
# float32 steps of values near 4, from matrix products summed in another order); asserted 20 times that.
LATENT_TOLERANCE = 1e-5

Join = tuple[Hashable, torch.Tensor, Sampling, torch.Generator]  # key, text tokens, sampling, generator


TORCH_THREADS = 1  # the session's engine (conftest.py) on one thread: a shared 2-core machine


@pytest.fixture(scope="module")
def cond(engine: XttsEngine) -> torch.Tensor:
    voice = engine.builtin_voice(engine.speaker_names[0])
    assert voice is not None
    return voice.gpt_cond_latent.to(engine.device)


@pytest.fixture(scope="module")
def tokens(engine: XttsEngine) -> list[torch.Tensor]:
    return [torch.IntTensor(engine.model.tokenizer.encode(t.lower(), lang="en"))[None].to(engine.device) for t in TEXTS]


def fixed(n: int, **kwargs: float) -> Sampling:
    """Deterministic decoding in coqui (which always samples): top_k=1, length pinned to n tokens."""
    return Sampling(**{"top_k": 1, **kwargs}, min_new_tokens=n, max_new_tokens=n)  # type: ignore[arg-type]


def generator(engine: XttsEngine, seed: int) -> torch.Generator:
    return torch.Generator(device=engine.device).manual_seed(seed)


@torch.inference_mode()
def coqui_run(
    engine: XttsEngine, cond: torch.Tensor, text: torch.Tensor, sampling: Sampling, seed: int = 0
) -> tuple[list[int], torch.Tensor]:
    """Tokens and latents of coqui's stream, called as workers/engine.py calls it."""
    torch.manual_seed(seed)
    gpt = engine.model.gpt
    fake_inputs = gpt.compute_embeddings(cond, text)
    stream = gpt.get_generator(
        fake_inputs=fake_inputs,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        temperature=sampling.temperature,
        do_sample=True,
        num_beams=1,
        num_return_sequences=1,
        length_penalty=1.0,
        repetition_penalty=sampling.repetition_penalty,
        output_attentions=False,
        output_hidden_states=True,
        return_dict_in_generate=True,
        min_new_tokens=sampling.min_new_tokens,
        max_new_tokens=sampling.max_new_tokens,
    )
    pairs = list(stream)
    return [int(token) for token, _ in pairs], torch.cat([latent for _, latent in pairs])


def drive(
    batch: BatchedGPT,
    joins: Mapping[int, Sequence[Join]],
    cond: torch.Tensor,
    removals: dict[int, Hashable] | None = None,
) -> dict[Hashable, list[StepOutput]]:
    """Step the batch until it is empty, adding (key, text, sampling, generator) entries after `step` steps."""
    results: dict[Hashable, list[StepOutput]] = {}
    step = 0
    while len(batch) or any(s >= step for s in joins):
        for key, text, sampling, gen in joins.get(step, []):
            batch.add(key, cond, text, sampling, gen)
        if removals and step in removals:
            batch.remove(removals[step])
        for key, out in batch.step().items():
            results.setdefault(key, []).append(out)
        step += 1
    return results


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n  {line}", end="")


# --- sampling semantics ------------------------------------------------------------------------------
def test_batched_processing_is_hugging_faces_row_by_row() -> None:
    """process_scores equals HF's processor list (coqui's order) applied to each row alone, bit for bit."""
    vocab, stop, prompt = 1026, 1025, 40
    rows = [
        Sampling(0.75, 50, 0.85, 5.0, min_new_tokens=12),
        Sampling(1.0, 0, 1.0, 1.0),  # every filter off
        Sampling(0.3, 1, 0.5, 1.3, min_new_tokens=3),
        Sampling(1.7, 900, 0.99, 2.0),
        Sampling(0.65, 2000, 0.15, 10.0, min_new_tokens=100),  # top_k above the vocabulary
    ]
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(len(rows), vocab, generator=g) * 4
    logits[:, stop] += 6  # make the stop token a contender
    generated = [torch.randint(0, vocab - 2, (n,), generator=g) for n in (10, 0, 3, 57, 99)]
    input_ids = [torch.cat([torch.ones(prompt - 1, dtype=torch.long), torch.tensor([1024]), ids]) for ids in generated]

    expected = []
    for s, ids, row in zip(rows, input_ids, logits, strict=True):
        hf = LogitsProcessorList()
        if s.repetition_penalty != 1.0:
            hf.append(RepetitionPenaltyLogitsProcessor(s.repetition_penalty))
        if s.min_new_tokens:
            hf.append(MinNewTokensLengthLogitsProcessor(prompt, s.min_new_tokens, torch.tensor([stop])))
        if s.temperature != 1.0:
            hf.append(TemperatureLogitsWarper(s.temperature))
        if s.top_k:
            hf.append(TopKLogitsWarper(s.top_k))
        if s.top_p < 1.0:
            hf.append(TopPLogitsWarper(s.top_p))
        expected.append(hf(cast(torch.LongTensor, ids[None]), cast(torch.FloatTensor, row[None].clone()))[0])

    seen = torch.zeros(len(rows), vocab, dtype=torch.bool)
    for i, ids in enumerate(input_ids):
        seen[i, ids] = True
    ban = torch.tensor([len(ids) - prompt < (s.min_new_tokens or 0) for s, ids in zip(rows, input_ids, strict=True)])
    got = process_scores(logits.clone(), SamplingTensors.build(rows, vocab, torch.device("cpu")), seen, ban, stop)
    assert torch.equal(got, torch.stack(expected))
    assert torch.isinf(got[4, stop]) and not torch.isinf(got[3, stop])


def test_sampling_parameters_are_checked() -> None:
    for bad in (
        {"temperature": 0.0},
        {"top_k": -1},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"repetition_penalty": 0.0},
        {"max_new_tokens": 0},
    ):
        with pytest.raises(ValueError):
            Sampling(**bad)  # type: ignore[arg-type]


# --- equivalence with coqui's generator --------------------------------------------------------------
@pytest.mark.parametrize("penalty", [5.0, 1.0])
def test_joining_at_different_steps_gives_coquis_tokens(
    engine: XttsEngine,
    cond: torch.Tensor,
    tokens: list[torch.Tensor],
    penalty: float,
    capsys: pytest.CaptureFixture[str],
) -> None:
    samplings = [fixed(n, repetition_penalty=penalty) for n in LENGTHS]
    reference = [coqui_run(engine, cond, t, s) for t, s in zip(tokens, samplings, strict=True)]
    batch = BatchedGPT(engine.model.gpt, engine.device)
    joins = {step: [(i, tokens[i], samplings[i], generator(engine, i))] for i, step in enumerate(JOIN_AFTER)}
    results = drive(batch, joins, cond)

    worst = 0.0
    for i, (ref_tokens, ref_latents) in enumerate(reference):
        outs = results[i]
        assert [o.token for o in outs] == ref_tokens
        assert [o.finished for o in outs] == [False] * (LENGTHS[i] - 1) + [True]
        diff = (torch.stack([o.latent for o in outs]).float() - ref_latents.float()).abs().max().item()
        worst = max(worst, diff)
    assert worst < LATENT_TOLERANCE
    assert len(batch) == 0 and batch.step() == {}
    report(capsys, f"repetition {penalty}: 4 x {LENGTHS} tokens identical to coqui's; max |latent diff| {worst:.2e}")


def test_a_cancelled_sequence_leaves_the_others_unchanged(
    engine: XttsEngine, cond: torch.Tensor, tokens: list[torch.Tensor]
) -> None:
    samplings = [fixed(n, repetition_penalty=5.0) for n in LENGTHS]
    reference = [coqui_run(engine, cond, t, s)[0] for t, s in zip(tokens, samplings, strict=True)]
    batch = BatchedGPT(engine.model.gpt, engine.device)
    joins = {step: [(i, tokens[i], samplings[i], generator(engine, i))] for i, step in enumerate(JOIN_AFTER)}
    # Text 1 has the longest prompt: the batch's left padding is sized by it until it leaves.
    results = drive(batch, joins, cond, removals={15: 1})
    assert len(results[1]) == 15 - JOIN_AFTER[1] and not results[1][-1].finished
    for i in (0, 2, 3):
        assert [o.token for o in results[i]] == reference[i]

    with pytest.raises(KeyError):
        batch.remove("nobody")


def test_padding_columns_are_trimmed_when_the_longest_prompt_leaves(
    engine: XttsEngine, cond: torch.Tensor, tokens: list[torch.Tensor]
) -> None:
    batch = BatchedGPT(engine.model.gpt, engine.device)
    batch.add("short", cond, tokens[2], fixed(50), generator(engine, 0))
    short_length = batch._rows.mask.shape[1] if batch._rows is not None else 0  # peeking: the cache's columns
    batch.add("long", cond, tokens[1], fixed(50), generator(engine, 1))
    for _ in range(5):
        batch.step()
    assert batch._rows is not None and batch._rows.mask.shape[1] > short_length + 5
    batch.remove("long")
    assert "long" not in batch and "short" in batch and len(batch) == 1
    assert batch._rows.mask.shape[1] == short_length + 5 and bool(batch._rows.mask.all())


def test_conditioning_prefixes_of_different_lengths_batch_as_they_decode_alone(
    engine: XttsEngine, cond: torch.Tensor, tokens: list[torch.Tensor]
) -> None:
    """A 65-row conditioning latent (the shape of coqui's official client's default_speaker.json) decodes the same
    tokens and latents alone (coqui's own stream) as batched with a 32-row one: the prefix length is just another
    prompt length, left-padded with the attention mask set to 0 there."""
    g = torch.Generator().manual_seed(65)
    long_cond = (torch.randn(1, 65, cond.shape[-1], generator=g) * cond.std()).to(engine.device)
    assert cond.shape[1] == 32
    runs = {"65 rows": (long_cond, tokens[0], fixed(30)), "32 rows": (cond, tokens[3], fixed(40))}
    alone = {key: coqui_run(engine, c, t, s) for key, (c, t, s) in runs.items()}
    batch = BatchedGPT(engine.model.gpt, engine.device)
    for seed, (key, (c, t, s)) in enumerate(runs.items()):
        batch.add(key, c, t, s, generator(engine, seed))
    assert batch._rows is not None and not bool(batch._rows.mask.all())  # peeking: one row is left-padded
    batched: dict[Hashable, list[StepOutput]] = {}
    while len(batch):
        for key, out in batch.step().items():
            batched.setdefault(key, []).append(out)
    for key, (ref_tokens, ref_latents) in alone.items():
        assert [o.token for o in batched[key]] == ref_tokens, key
        diff = (torch.stack([o.latent for o in batched[key]]).float() - ref_latents.float()).abs().max().item()
        assert diff < LATENT_TOLERANCE, key
    # The 65 rows do condition the decoding: the random dev model's tokens hardly depend on the prefix, its latents
    # do, far beyond the tolerance above (measured: 700 times).
    other_prefix = coqui_run(engine, cond, tokens[0], fixed(30))[1]
    assert (other_prefix.float() - alone["65 rows"][1].float()).abs().max().item() > 10 * LATENT_TOLERANCE


# --- replay ------------------------------------------------------------------------------------------
def test_replay_resumes_where_the_sequence_stopped(
    engine: XttsEngine, cond: torch.Tensor, tokens: list[torch.Tensor], capsys: pytest.CaptureFixture[str]
) -> None:
    total, resumed_at = 40, 17
    sampling = Sampling(0.75, 50, 0.85, 5.0, min_new_tokens=total, max_new_tokens=total)
    original = BatchedGPT(engine.model.gpt, engine.device)
    gen = generator(engine, 11)
    original.add("a", cond, tokens[3], sampling, gen)
    outs, saved_state = [], None
    while len(original):
        outs.append(original.step()["a"])
        if len(outs) == resumed_at:
            saved_state = gen.get_state()  # what a worker would persist with the tokens
    ref_tokens = [o.token for o in outs]
    ref_latents = torch.stack([o.latent for o in outs]).float()

    # Resumed in a batch that is already running another sequence.
    resumed = BatchedGPT(engine.model.gpt, engine.device)
    resumed.add("other", cond, tokens[1], fixed(60), generator(engine, 5))
    resumed.step()
    gen2 = torch.Generator(device=engine.device)
    assert saved_state is not None
    gen2.set_state(saved_state)
    replay_latents = resumed.add("a", cond, tokens[3], sampling, gen2, replay=ref_tokens[:resumed_at])
    assert replay_latents.shape == (resumed_at, engine.gpt_width)
    replay_diff = (replay_latents.float() - ref_latents[:resumed_at]).abs().max().item()
    assert replay_diff < LATENT_TOLERANCE

    rest: list[StepOutput] = []
    while "a" in resumed:
        rest.append(resumed.step()["a"])
    next_diff = (rest[0].latent.float() - ref_latents[resumed_at]).abs().max().item()
    with torch.inference_mode():  # the latents are inference tensors, as coqui's are
        gpt = engine.model.gpt
        logit_diff = (gpt.mel_head(rest[0].latent) - gpt.mel_head(ref_latents[resumed_at])).abs().max().item()
    assert next_diff < LATENT_TOLERANCE and logit_diff < LATENT_TOLERANCE
    # With the generator's saved state, even the sampled continuation is the original's.
    assert [o.token for o in rest] == ref_tokens[resumed_at:]
    report(
        capsys,
        f"replay {resumed_at}/{total}: max |latent diff| replayed {replay_diff:.2e}, next step "
        f"{next_diff:.2e} (logits {logit_diff:.2e}); sampled continuation identical",
    )


def test_a_resumed_sequence_replays_the_recorded_tokens_then_draws_anew_from_its_seed(
    engine: XttsEngine, cond: torch.Tensor, tokens: list[torch.Tensor], capsys: pytest.CaptureFixture[str]
) -> None:
    """What a worker does when it resumes a segment (workers/scheduler.py): the tokens an earlier run recorded are
    replayed, with a generator seeded afresh from the segment's seed (not restored to where the earlier run's
    stood), under the default sampling. The replayed prefix is exactly the recorded one (its latents are the earlier
    run's) and the sequence goes on from its end, no token missing or repeated (the first new step's latent is the
    earlier run's at that position, and exactly the tokens left are drawn); the draws after it are new ones."""
    total, seed = 40, 11
    sampling = Sampling(min_new_tokens=total, max_new_tokens=total)  # the shipped defaults, length pinned
    first_run = drive(
        BatchedGPT(engine.model.gpt, engine.device), {0: [("a", tokens[3], sampling, generator(engine, seed))]}, cond
    )["a"]
    recorded = [o.token for o in first_run]
    latents = torch.stack([o.latent for o in first_run]).float()
    same = []
    for resumed_at in (1, 17, 30):
        batch = BatchedGPT(engine.model.gpt, engine.device)
        batch.add("other", cond, tokens[1], Sampling(max_new_tokens=60), generator(engine, 5))
        batch.step()  # resumed into a batch already under way
        replayed = batch.add("a", cond, tokens[3], sampling, generator(engine, seed), replay=recorded[:resumed_at])
        assert (replayed.float() - latents[:resumed_at]).abs().max().item() < LATENT_TOLERANCE
        rest: list[StepOutput] = []
        while "a" in batch:
            rest.append(batch.step()["a"])
        assert [o.finished for o in rest] == [False] * (total - resumed_at - 1) + [True]
        assert (rest[0].latent.float() - latents[resumed_at]).abs().max().item() < LATENT_TOLERANCE
        drawn = [o.token for o in rest]
        same.append(sum(a == b for a, b in zip(drawn, recorded[resumed_at:], strict=True)))
        # Measured: 0, 0 and 1 of the 39, 23 and 10 new tokens are the earlier run's at their positions.
        assert drawn != recorded[resumed_at:], "a restarted generator drew the earlier run's tokens"
    report(capsys, f"re-seeded resume at 1, 17, 30 of {total}: new tokens equal to the earlier run's: {same}")


def test_replay_then_greedy_continuation_equals_the_uninterrupted_run(
    engine: XttsEngine, cond: torch.Tensor, tokens: list[torch.Tensor]
) -> None:
    sampling = fixed(36, repetition_penalty=5.0)
    uninterrupted, _ = coqui_run(engine, cond, tokens[0], sampling)
    for resumed_at in (1, 20, 35):
        batch = BatchedGPT(engine.model.gpt, engine.device)
        batch.add("a", cond, tokens[0], sampling, generator(engine, 0), replay=uninterrupted[:resumed_at])
        rest = []
        while len(batch):
            rest.append(batch.step()["a"].token)
        assert uninterrupted[:resumed_at] + rest == uninterrupted


def test_a_finished_replay_is_refused(engine: XttsEngine, cond: torch.Tensor, tokens: list[torch.Tensor]) -> None:
    batch = BatchedGPT(engine.model.gpt, engine.device)
    with pytest.raises(ValueError):
        batch.add("a", cond, tokens[0], fixed(3), generator(engine, 0), replay=[5, 6, 7])
    with pytest.raises(ValueError):
        batch.add("a", cond, tokens[0], REAL, generator(engine, 0), replay=[5, engine.model.gpt.stop_audio_token])
    batch.add("a", cond, tokens[0], REAL, generator(engine, 0))
    with pytest.raises(KeyError):
        batch.add("a", cond, tokens[0], REAL, generator(engine, 0))


# --- per-row random generators ------------------------------------------------------------------------
def test_a_seeded_row_samples_the_same_tokens_alone_or_batched(
    engine: XttsEngine, cond: torch.Tensor, tokens: list[torch.Tensor], capsys: pytest.CaptureFixture[str]
) -> None:
    n = 48
    sampling = Sampling(0.75, 50, 0.85, 5.0, min_new_tokens=n, max_new_tokens=n)
    coqui_tokens, _ = coqui_run(engine, cond, tokens[0], sampling, seed=21)  # global RNG seeded with 21
    alone = drive(
        BatchedGPT(engine.model.gpt, engine.device), {0: [("x", tokens[0], sampling, generator(engine, 21))]}, cond
    )["x"]
    others: list[Join] = [
        ("o1", tokens[1], Sampling(1.0, 0, 1.0, 1.0, max_new_tokens=n), generator(engine, 1)),
        ("o2", tokens[2], Sampling(0.5, 10, 0.7, 2.0, min_new_tokens=30, max_new_tokens=30), generator(engine, 2)),
        ("o3", tokens[3], Sampling(1.2, 100, 0.95, 1.5, max_new_tokens=60), generator(engine, 3)),
    ]
    batched = drive(
        BatchedGPT(engine.model.gpt, engine.device),
        {0: others[:2], 4: [("x", tokens[0], sampling, generator(engine, 21))], 9: others[2:]},
        cond,
    )["x"]
    alone_tokens = [o.token for o in alone]
    batched_matches = sum(a.token == b for a, b in zip(batched, alone_tokens, strict=True))
    coqui_matches = sum(a == b for a, b in zip(alone_tokens, coqui_tokens, strict=True))
    report(
        capsys,
        f"sampled, seeded: alone vs batched with 3 others {batched_matches}/{n} tokens; "
        f"alone vs coqui (global seed) {coqui_matches}/{n}",
    )
    # Measured: every token, both ways. One generator per row: its draws do not depend on the batch.
    assert [o.token for o in batched] == alone_tokens
    assert alone_tokens == coqui_tokens


# --- devices -------------------------------------------------------------------------------------------
def test_fp16_autocast_is_ignored_on_cpu(engine: XttsEngine) -> None:
    assert not BatchedGPT(engine.model.gpt, "cpu", autocast_fp16=True).autocast_fp16


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_autocast_on_cuda_follows_coqui_under_the_same_autocast(
    engine: XttsEngine, cond: torch.Tensor, tokens: list[torch.Tensor], capsys: pytest.CaptureFixture[str]
) -> None:
    samplings = [fixed(n, repetition_penalty=5.0) for n in LENGTHS]
    with torch.autocast("cuda", dtype=torch.float16):
        reference = [coqui_run(engine, cond, t, s)[0] for t, s in zip(tokens, samplings, strict=True)]
    batch = BatchedGPT(engine.model.gpt, engine.device, autocast_fp16=True)
    joins = {step: [(i, tokens[i], samplings[i], generator(engine, i))] for i, step in enumerate(JOIN_AFTER)}
    results = drive(batch, joins, cond)
    matches = sum(o.token == r for i in range(4) for o, r in zip(results[i], reference[i], strict=True))
    report(capsys, f"CUDA fp16 autocast: {matches}/{sum(LENGTHS)} tokens as coqui's")
    assert all(torch.isfinite(o.latent).all() for outs in results.values() for o in outs)
    assert matches >= 0.9 * sum(LENGTHS)


@torch.inference_mode()
def eager_text_attention(
    engine: XttsEngine, batch: BatchedGPT, cond: torch.Tensor, text: torch.Tensor, generated: list[int]
) -> torch.Tensor:
    """[steps, T]: the attention weights the GPT-2 stack itself reports (eager attention, `output_attentions`) from
    each step's input position to the text tokens, averaged over the heads of the alignment layers, for the whole
    sequence run at once, alone."""
    gpt = engine.model.gpt
    audio = batch._audio_embeddings(
        torch.tensor([gpt.start_audio_token, *generated[:-1]], device=engine.device),
        torch.arange(len(generated), device=engine.device),
    )
    prefix = batch._prompt_embeddings(cond, text)
    stack = gpt.gpt
    implementation = stack.config._attn_implementation
    stack.set_attn_implementation("eager")
    try:
        out = stack(inputs_embeds=torch.cat([prefix, audio[None]], dim=1), output_attentions=True, use_cache=False)
    finally:
        stack.set_attn_implementation(implementation)
    layers = torch.stack([out.attentions[layer][0] for layer in batch.alignment_layers]).mean(dim=(0, 1))  # [L, L]
    text_at, steps = cond.shape[1] + 1, prefix.shape[1] + torch.arange(len(generated))
    return layers[steps][:, text_at : text_at + text.numel()]


def test_the_text_a_step_attends_to_is_read_from_the_models_own_attention_weights(
    engine: XttsEngine, cond: torch.Tensor, tokens: list[torch.Tensor]
) -> None:
    """Sequences joined at different steps (rows left-padded differently, prompts of different lengths): each step's
    `text_focus` is the text token with the most attention weight by the GPT-2 stack's own eager attention run on
    that sequence alone. Steps whose two heaviest text tokens are within float rounding of each other (the random
    model attends nearly evenly) are left out of the comparison, and they are few."""
    samplings = [fixed(n, repetition_penalty=5.0) for n in LENGTHS]
    batch = BatchedGPT(engine.model.gpt, engine.device)
    joins = {step: [(i, tokens[i], samplings[i], generator(engine, i))] for i, step in enumerate(JOIN_AFTER)}
    results = drive(batch, joins, cond)
    compared = 0
    for i, outs in results.items():
        weights = eager_text_attention(engine, batch, cond, tokens[i], [o.token for o in outs])
        top2 = weights.topk(2, dim=1)
        clear = (top2.values[:, 0] - top2.values[:, 1]) > 1e-6  # rounding: about 1e-7
        focus = torch.tensor([o.text_focus for o in outs])
        assert torch.equal(focus[clear], top2.indices[clear, 0]), (focus, top2.indices[:, 0])
        compared += int(clear.sum())
    assert compared > 0.9 * sum(LENGTHS), compared
