"""The continuous-batching scheduler of a worker process: one model, many segments synthesized at once.

Every segment a worker runs becomes a *member* of the batch here. One loop (`BatchScheduler.run`, on its own
thread in a worker; or driven step by step by `XttsEngine.synthesize_chunks`) repeats:

1. **admit** new members, up to `max_batch` at once: each one's prompt is prefilled alone and joins the
   running batch of `BatchedGPT` at the next step, without waiting for the others to finish;
2. **step**: one batched GPT forward pass advances every member by one audio token (each with its own
   KV cache row, sampling parameters and random generator);
3. **decode**: members that have enough new latents for their next audio chunk (or that finished) get their
   span of HiFi-GAN frames decoded, batched with other members' spans where that is faster, and the chunk goes
   out at once to the member's consumer (the Celery task thread that publishes it to Redis).

Which members decode first is decided by the listeners: live members before bulk ones (nobody plays bulk audio as
it comes), each class earliest deadline first: a member whose listener has no audio at all yet (a text's first
segment) is the most urgent; the others go by how much audio their listener has
in hand, which for a live text's next segment (`Segment.deadline`, shared.jobs.playback_deadline) includes what is
left of the text's earlier segments. While a newcomer a listener waits for is still generating its first chunk,
established members with enough audio buffered postpone their decodes, so a new request's first audio does not
wait behind other members' long spans. A live text's next segment that is not due yet (its listener has more audio
in hand than its first chunk takes to make) joins the batch early only where that pauses nobody and keeps the batch
within its live capacity; otherwise it waits, and starts when due. A live segment that arrives, or becomes due, while
a bulk chunk is being decoded does not wait for it (on a CPU, up to a second): that HiFi-GAN call stops and is made
again later.

Live members come before bulk ones (shared/priority.py): a live segment that finds the batch full takes the slot of
a bulk member, and while the batch holds live work it holds no more members than its streams run faster than real
time at (`Capacity.live_capacity`, measured as it runs): bulk members beyond that yield their slots too. A bulk
member that yields is *paused*: it leaves the GPT batch but keeps its decoder, its random generator and the tokens
of its current part, and when a slot is free again (before any new bulk segment is admitted) it rejoins by
replaying those tokens (teacher-forced, as a resumed segment does), then samples on from the same generator: its
listener gets the same audio as if it had never paused, only later.

A member is a *segment*, whose text XTTS may take in several *parts* (when its cleaned text is too long for the
GPT): parts run one after another, each with its own GPT sequence and decoder. Every chunk reports the audio
tokens generated since the previous chunk, so a segment interrupted anywhere can be resumed exactly by
replaying them (see `Segment.replay`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from workers.batched_gpt import BatchedGPT, Sampling
from workers.capacity import REALTIME_MARGIN, Capacity, batch_limit
from workers.stream_decoder import DecodeInterrupted, FrameSpan, StreamingDecoder, decode_spans

log = logging.getLogger(__name__)

# Later chunks of a member grow (doubling) up to this many times its first chunk: each decode re-runs the
# decoder's context margin, so fewer, larger spans cost less once the listener has audio buffered (on a GPU).
MAX_CHUNK_GROWTH = 4
# On a CPU, spans past twice a first chunk of 20 tokens decode slower per frame, not faster (measured, dev model, one
# torch thread, 4 bulk members of 200 tokens: 21.6 s with chunks growing to 80 tokens, 18.6 s to 40, 20.1 s at 20),
# and a live segment that arrives waits for the span under way (the longest call: 2.6 s at 80 tokens, 1.0 s at 40).
CPU_MAX_CHUNK_GROWTH = 2
# HiFi-GAN frames per audio token: 4 mel frames at 22.05 kHz, resampled to 24 kHz (for estimates of decode times).
FRAMES_PER_TOKEN = 4 * 24000 / 22050
# An established member postpones its decode for a newcomer's first chunk only while its listener has at
# least this much audio in hand beyond what the decode will take.
LOW_WATER_SECONDS = 1.0
# The batch keeps to its live capacity this long after its last live member left: a live text's next segment
# arrives within a fraction of a second, and resuming every paused bulk member (each replays its tokens) only to
# pause it again would cost that segment its start.
LIVE_HOLD_SECONDS = 1.0


@dataclass(frozen=True)
class Part:
    """One GPT pass of a segment: its text tokens and, when resuming, what an earlier run already did."""

    text_tokens: torch.Tensor  # [1, T] XTTS text token ids
    sampling: Sampling
    seed: int
    replay: tuple[int, ...] = ()  # audio tokens already generated and delivered (teacher-forced, not decoded)
    done: bool = False  # an earlier run delivered all of this part's audio
    # For each text token, the characters of the segment's text said once it is (shared.alignment.token_char_ends);
    # None where the tokens do not map onto the text.
    char_ends: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Segment:
    """A synthesis request: what the scheduler needs to synthesize one segment's audio."""

    key: Hashable
    parts: tuple[Part, ...]
    cond_latent: torch.Tensor  # [1, N, D]: N conditioning rows (32 from XTTS-v2's cloning)
    speaker_embedding: torch.Tensor  # [1, 512, 1]
    chunk_tokens: int  # audio tokens in the first chunk
    length_scale: float = 1.0  # 1 / speed
    live: bool = True  # a listener waits for it (shared/priority.py): a bulk segment yields its slot to a live one
    # When (time.monotonic()) its listener runs out of the earlier audio of its text (a live text's next segment:
    # shared.jobs.playback_deadline); None: it has none in hand, its first audio is due at once.
    deadline: float | None = None


@dataclass(frozen=True)
class Chunk:
    """A piece of audio of one part, with the audio tokens generated since the previous chunk (for resuming)."""

    audio: torch.Tensor  # 1-D float32, 24 kHz, on the CPU; may be empty for the last chunk of a part
    tokens: tuple[int, ...]
    part: int
    part_end: bool
    focus: tuple[int | None, ...] = ()  # for each of `tokens`, the text token it attended to most


@dataclass(frozen=True)
class Finished:
    """The segment's last part has ended."""


@dataclass(frozen=True)
class Failed:
    error: BaseException


class Cancelled(Exception):
    """The consumer cancelled the segment: its audio is incomplete."""


Event = Chunk | Finished | Failed


class Handle:
    """The consumer's side of a submitted segment: iterate its events; `cancel` stops it within one step."""

    def __init__(self, segment: Segment, drive: Callable[[], None] | None = None) -> None:
        self.segment = segment
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._cancelled = threading.Event()
        self._drive = drive  # synchronous use: advance the scheduler instead of waiting for its thread
        self.finished = False
        self._paused_since: float | None = None  # set while the scheduler has paused it for live work
        self._paused_total = 0.0

    @property
    def paused_seconds(self) -> float:
        """How long it has waited paused, in all (a time limit on its run does not count that)."""
        since = self._paused_since
        return self._paused_total + (time.monotonic() - since if since is not None else 0.0)

    def pause(self) -> None:
        if self._paused_since is None:
            self._paused_since = time.monotonic()

    def unpause(self) -> None:
        if self._paused_since is not None:
            self._paused_total += time.monotonic() - self._paused_since
            self._paused_since = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()

    def put(self, event: Event) -> None:
        self._events.put(event)

    def events(self, timeout: float | None = None) -> Iterator[Chunk]:
        """The segment's chunks as they come; returns after the last one (so returning means complete), raises
        what failed it (`Cancelled` after a cancel). `timeout`: longest wait for one event (None: forever)
        before `TimeoutError`; not counting the time it spends paused for live work."""
        while True:
            if self._drive is not None:
                while self._events.empty():
                    self._drive()
            try:
                event = self._events.get(timeout=timeout)
            except queue.Empty:
                if self._paused_since is not None:
                    continue  # it yielded its slot to live work: the model is answering, just not for it
                raise TimeoutError(f"no audio from the scheduler for {timeout} s") from None
            chunk = self._take(event)
            if chunk is None:
                return
            yield chunk

    def poll(self) -> Chunk | None:
        """The next chunk if one is there (None: none yet, or finished: see `finished`); never waits."""
        try:
            return self._take(self._events.get_nowait())
        except queue.Empty:
            return None

    def _take(self, event: Event) -> Chunk | None:
        if isinstance(event, Chunk):
            return event
        self.finished = True
        if isinstance(event, Failed):
            raise event.error
        return None


@dataclass(eq=False)  # compared by identity (it holds tensors)
class _Member:
    """A segment admitted to the batch: the scheduler's state of it."""

    handle: Handle
    arrived: float
    part_index: int = -1
    decoder: StreamingDecoder | None = None
    generator: torch.Generator | None = None  # the current part's random stream (kept across a pause)
    part_tokens: list[int] = field(default_factory=list)  # every token of the current part (replayed on resume)
    pending: list[torch.Tensor] = field(default_factory=list)  # latents not fed to the decoder yet
    tokens: list[int] = field(default_factory=list)  # tokens generated since the last chunk
    focus: list[int | None] = field(default_factory=list)  # and the text token each attended to most
    target: int = 0  # latents to gather before the next decode
    part_finished: bool = False
    first_chunk_at: float | None = None
    emitted_seconds: float = 0.0
    expected_decode_seconds: float = 0.0

    @property
    def segment(self) -> Segment:
        return self.handle.segment

    @property
    def key(self) -> Hashable:
        return self.segment.key

    def ready(self) -> bool:
        return self.part_finished or len(self.pending) >= self.target

    def slack(self, now: float) -> float:
        """Seconds of audio the listener has in hand: before the first chunk, -inf when it has none (most urgent)
        or the time until its deadline; after, what this segment sent beyond the playback clock, which runs from
        its first chunk, or from the deadline when that came first (the listener was still hearing earlier audio)."""
        deadline = self.segment.deadline
        if self.first_chunk_at is None:
            return float("-inf") if deadline is None else deadline - now
        start = self.first_chunk_at if deadline is None else max(self.first_chunk_at, deadline)
        return start + self.emitted_seconds - now


class BatchScheduler:
    """Runs segments through one model in a continuous batch. `submit` from any thread; `run` on one thread
    (or call `step` yourself, as `XttsEngine.synthesize_chunks` does)."""

    def __init__(
        self,
        model: Any,  # coqui's Xtts, on `device`, in eval mode
        device: str,
        max_batch: int,
        *,
        fp16: bool = False,
        decode_context: int = 12,
    ) -> None:
        self.model = model
        self.device = device
        self.max_batch = max(1, max_batch)
        self.fp16 = fp16 and device.startswith("cuda")
        self.decode_context = decode_context
        self.gpt = BatchedGPT(model.gpt, device, autocast_fp16=self.fp16)
        self.sample_rate = int(model.hifigan_decoder.output_sample_rate)
        self._waiting: queue.SimpleQueue[Handle] = queue.SimpleQueue()
        self._queued: list[Handle] = []  # taken from _waiting, not admitted yet (the batch was full)
        self._members: dict[Hashable, _Member] = {}
        self._paused: list[_Member] = []  # bulk members that yielded their slot, oldest first
        self._live_seen_at = float("-inf")  # when the batch last held (or had waiting) live work
        self.pauses = 0  # bulk members paused for live ones, since the start
        self.capacity = Capacity(self.max_batch)  # its real-time capacity, measured as it runs
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._live_arrived = threading.Event()  # a live segment was submitted since the last admission
        self._live_due_at = float("inf")  # when the first live segment left waiting at the last admission is due
        # Members' spans per HiFi-GAN call. A GPU batches them. On a CPU a batched call is slower than its spans one
        # by one (padded to the longest; measured: 4 bulk members of 200 tokens, one torch thread, 25 s batched
        # against 17 s one by one), and a live segment that arrives meanwhile waits for the call under way: one
        # span at a time keeps that wait to one member's decode, not a batch's (4.3 s to first audio, then 0.9 s).
        self.decode_group = self.max_batch if device.startswith("cuda") else 1
        self.chunk_growth = MAX_CHUNK_GROWTH if device.startswith("cuda") else CPU_MAX_CHUNK_GROWTH
        self.lock = threading.Lock()  # held while the model runs a step (cloning takes it between steps)
        self._decode_seconds_per_frame = 0.0  # measured, for the postponing rule
        self.steps = 0  # batched GPT steps run
        self.sequence_steps = 0  # sequences advanced, all steps together: / steps = the batch's mean occupancy
        self.decodes_interrupted = 0  # bulk decodes given up for a live segment that arrived (made again later)

    # --- the consumer side ---------------------------------------------------------------------------
    def submit(self, segment: Segment, *, synchronous: bool = False) -> Handle:
        handle = Handle(segment, drive=self.step if synchronous else None)
        self._waiting.put(handle)
        if segment.live:
            self._live_arrived.set()
        self._wake.set()
        return handle

    @property
    def active(self) -> int:
        """Segments being synthesized now (the batch's occupancy)."""
        return len(self._members)

    @property
    def paused(self) -> int:
        """Bulk segments paused for live ones."""
        return len(self._paused)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self) -> None:
        """The loop of a worker's scheduler thread."""
        while not self._stop.is_set():
            if not self._members and not self._queued and self._waiting.empty():
                held = self._live_hold_left() if self._paused else 0.0
                if not self._paused or held > 0:  # nothing to run, or paused work held for live work: sleep
                    self._wake.wait(timeout=held or 1.0)
                    self._wake.clear()
                    continue
            try:
                self.step()
            except Exception as exc:  # a broken step must not kill the worker: fail what was running
                log.exception("scheduler step failed; failing its %d segments", len(self._members))
                self._fail_all(exc)

    # --- one iteration -------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> None:
        with self.lock:
            self._drop_cancelled()
            self._admit()
            if len(self.gpt):
                self._generate()
            self._decode_ready()

    def _drop_cancelled(self) -> None:
        for member in [s for s in [*self._members.values(), *self._paused] if s.handle.cancelled]:
            self._leave(member)
            member.handle.put(Failed(Cancelled(f"{member.key!r} was cancelled")))
        for handle in [h for h in self._queued if h.cancelled]:
            self._queued.remove(handle)
            handle.put(Failed(Cancelled(f"{handle.segment.key!r} was cancelled")))

    def _admit(self) -> None:
        self._live_arrived.clear()  # before taking them: one submitted after this is seen at the next decode
        while not self._waiting.empty():
            self._queued.append(self._waiting.get())
        # Live first, earliest deadline first (a text's first segment, which has none, before a next one; equals in
        # order of arrival), then the paused bulk members, then new bulk ones.
        self._queued.sort(key=lambda h: (not h.segment.live, _deadline_order(h.segment)))
        now = time.monotonic()
        limit = self._limit(now)
        due = sum(1 for h in self._queued if self._due(h, now))
        # Bulk members yield their slots: to the live segments due, and to keep a batch with live work in it within
        # what it carries at real time.
        while self._occupied() > limit - min(due, limit):
            victim = self._pausable()
            if victim is None:
                break
            self._pause(victim)
        while self._occupied() < self._limit(now):
            live = next((h for h in self._queued if h.segment.live), None)
            if live is not None and (self._due(live, now) or self._fits_early()):
                self._start(self._take(live))
            elif self._paused:
                self._resume(self._paused.pop(0))
            elif (bulk := next((h for h in self._queued if not h.segment.live), None)) is not None:
                self._start(self._take(bulk))
            else:
                break
        for handle in self._queued:
            if not self._due(handle, now) and handle.segment.live:
                handle.pause()  # waiting for its deadline by design: no time limit counts it
        self._live_due_at = self._next_live_due()

    def _take(self, handle: Handle) -> Handle:
        self._queued.remove(handle)
        return handle

    def _due(self, handle: Handle, now: float) -> bool:
        """A live segment that must start now to have its first chunk before its listener runs out of audio."""
        return handle.segment.live and now >= self._due_at(handle.segment)

    def _due_at(self, segment: Segment) -> float:
        """When a live segment must start: at once without a deadline, else its deadline less the time a first chunk
        takes in a batch of one more, with LOW_WATER_SECONDS to spare (at once before anything was measured)."""
        if segment.deadline is None:
            return float("-inf")
        needed = self.capacity.chunk_seconds(len(self._members) + 1, segment.chunk_tokens)
        return float("-inf") if needed is None else segment.deadline - needed - LOW_WATER_SECONDS

    def _next_live_due(self) -> float:
        """When the first of the live segments left waiting for their deadlines becomes due. One left waiting though
        due already could not start (live members fill every slot): bulk work is not held up for it."""
        now = time.monotonic()
        upcoming = (due_at for h in self._queued if h.segment.live and (due_at := self._due_at(h.segment)) > now)
        return min(upcoming, default=float("inf"))

    def _live_waits(self) -> bool:
        """A live segment waits for this thread: one submitted since the last admission, or one left waiting for its
        deadline that has become due. Bulk decodes give way to it (they are stopped, or wait)."""
        return self._live_arrived.is_set() or time.monotonic() >= self._live_due_at

    def _fits_early(self) -> bool:
        """Room for a live segment that is not due yet: it starts early only if the batch, with it, stays within
        its live capacity (every stream in it still faster than real time) and nobody has to pause for it."""
        capacity = self.capacity.live_capacity()
        return self._occupied() < min(self.max_batch, capacity or self.max_batch)

    def _limit(self, now: float) -> int:
        """How many members the batch may hold now: every slot while it has no live work; with live work (members,
        and segments waiting that are due), as many as its streams run faster than real time at (the measured live
        capacity), bulk ones paused beyond that, though never fewer than the live segments it holds (the worker
        took them: they run, if slower). For LIVE_HOLD_SECONDS after the last live work left it does not grow: a
        live text's next segment is coming. A live segment waiting that is not due yet holds it too."""
        live = sum(1 for m in self._members.values() if m.segment.live)
        due = sum(1 for h in self._queued if self._due(h, now))
        if live or any(h.segment.live for h in self._queued):
            self._live_seen_at = now
        elif self._live_hold_left() > 0:
            return min(self._occupied(), self.max_batch)  # held: nothing resumed or started until it ends
        return batch_limit(self.max_batch, live + due, self.capacity.live_capacity() if live + due else None)

    def _occupied(self) -> int:
        """The batch's slots in use: its live members and the bulk ones still generating. A bulk member whose tokens
        are all made only has chunks left to decode, which wait while live work needs the thread: it could not be
        paused, and counting it would keep a live segment that is due waiting for those decodes."""
        return sum(1 for m in self._members.values() if m.segment.live or not m.part_finished)

    def _live_hold_left(self) -> float:
        """Seconds the batch still keeps to its live capacity after its last live member left (LIVE_HOLD_SECONDS)."""
        return max(0.0, self._live_seen_at + LIVE_HOLD_SECONDS - time.monotonic())

    def _start(self, handle: Handle) -> None:
        handle.unpause()
        member = _Member(handle, arrived=time.monotonic())
        self._members[member.key] = member
        try:
            self._start_next_part(member)
        except Exception as exc:
            self._leave(member)
            handle.put(Failed(exc))

    def _pausable(self) -> _Member | None:
        """The bulk member to pause for a live one: the one whose listener has the most audio in hand, among
        those in the GPT batch with tokens still to generate."""
        candidates = [
            m for m in self._members.values() if not m.segment.live and not m.part_finished and m.key in self.gpt
        ]
        now = time.monotonic()
        return max(candidates, key=lambda m: (m.slack(now), m.arrived), default=None)

    def _pause(self, member: _Member) -> None:
        self.gpt.remove(member.key)
        del self._members[member.key]
        self._paused.append(member)
        member.handle.pause()
        self.pauses += 1
        log.debug("bulk segment %r paused for a live one after %d tokens", member.key, len(member.part_tokens))

    def _resume(self, member: _Member) -> None:
        """Back into the batch: the part's tokens so far are replayed (their latents were already taken: the
        decoder holds them), then sampling goes on from the member's own generator, where it stopped."""
        self._members[member.key] = member
        member.handle.unpause()
        part = member.segment.parts[member.part_index]
        assert member.generator is not None  # set when its part started
        try:
            self.gpt.add(
                member.key,
                member.segment.cond_latent,
                part.text_tokens,
                part.sampling,
                member.generator,
                replay=tuple(member.part_tokens),
            )
        except Exception as exc:
            self._leave(member)
            member.handle.put(Failed(exc))

    def _start_next_part(self, member: _Member) -> None:
        """Move the member to its next part that still has audio to deliver, or finish it."""
        segment = member.segment
        member.part_index += 1
        while member.part_index < len(segment.parts) and segment.parts[member.part_index].done:
            member.part_index += 1
        if member.part_index >= len(segment.parts):
            self._leave(member)
            member.handle.put(Finished())
            return
        part = segment.parts[member.part_index]
        member.generator = torch.Generator(device=self.device).manual_seed(part.seed)
        member.part_tokens = list(part.replay)
        member.decoder = StreamingDecoder(
            self.model.hifigan_decoder,
            segment.speaker_embedding,
            length_scale=segment.length_scale,
            margin=self.decode_context,
        )
        member.pending, member.tokens, member.focus, member.part_finished = [], [], [], False
        member.target = segment.chunk_tokens
        replayed = self.gpt.add(
            member.key, segment.cond_latent, part.text_tokens, part.sampling, member.generator, replay=part.replay
        )
        if len(replayed):
            # Their audio was delivered already: advance the decoder's state without decoding it again.
            member.decoder.skip(replayed.float())

    def _generate(self) -> None:
        started = time.perf_counter()
        outputs = self.gpt.step()
        self.capacity.observe_step(len(outputs), time.perf_counter() - started)
        self.steps += 1
        self.sequence_steps += len(outputs)
        for key, out in outputs.items():
            member = self._members[key]
            member.pending.append(out.latent.float())
            member.tokens.append(out.token)
            member.focus.append(out.text_focus)
            member.part_tokens.append(out.token)
            member.part_finished = out.finished

    def _decode_ready(self) -> None:
        now = time.monotonic()
        ready = [s for s in self._members.values() if s.ready()]
        if not ready:
            return
        newcomers_generating = any(_waited_for(s, now) and not s.ready() for s in self._members.values())
        if newcomers_generating:
            # Keep GPT steps flowing for the newcomer: live members with audio in hand wait a step, bulk ones (nobody
            # listens: their "audio in hand" means nothing, and a segment paused a while has none) always.
            ready = [
                s for s in ready if _waited_for(s, now) or (s.segment.live and s.slack(now) < self._postpone_margin(s))
            ]
        # Live before bulk (nobody plays bulk audio as it comes), then earliest deadline first: first chunks a
        # listener has no audio before, then the listeners with the least audio in hand (a live text's next segment
        # counts what its listener still has of the earlier ones).
        ready.sort(key=lambda s: (not s.segment.live, s.slack(now), s.arrived))
        for group in self._decode_groups(ready, now):
            if not any(m.segment.live for m in group) and (self._live_waits() or not self._live_can_wait(group)):
                break  # bulk decodes wait (their latents kept): live work goes first
            self._decode(group)

    def _live_can_wait(self, group: list[_Member]) -> bool:
        """Whether this bulk decode may hold up live work: only if every live listener keeps LOW_WATER_SECONDS of audio
        in hand through it and through the making of its own next chunk after it, and no live segment left waiting
        for its deadline comes due meanwhile (it would stop the decode: wasted work)."""
        now = time.monotonic()
        cost = sum(self._decode_seconds_per_frame * self._span_frames(m) for m in group)
        if now + cost >= self._live_due_at:
            return False
        for member in self._members.values():
            if member.segment.live:
                # Its whole next chunk: the steps left are quick, but the chunk's decode still comes after them.
                own = self.capacity.chunk_seconds(max(len(self.gpt), 1), member.target) or 0.0
                if member.slack(now) < cost + own + LOW_WATER_SECONDS:
                    return False
        return True

    def _span_frames(self, member: _Member) -> float:
        """About the frames the member's next decode runs: its latents not fed yet, what its decoder holds undecoded
        (all of an interrupted decode's span), and the context on both sides."""
        held = member.decoder.backlog if member.decoder is not None else 0
        return len(member.pending) * FRAMES_PER_TOKEN + held + 2 * self.decode_context

    def _postpone_margin(self, member: _Member) -> float:
        return LOW_WATER_SECONDS + member.expected_decode_seconds

    def _decode_groups(self, ready: list[_Member], now: float) -> list[list[_Member]]:
        """First chunks a listener waits for one by one (each hears its first audio as soon as it is decoded),
        then the other live chunks, then the bulk ones, `decode_group` at a time (batched in `_decode`)."""
        firsts = [[s] for s in ready if _waited_for(s, now)]
        size = self.decode_group
        groups: list[list[_Member]] = []
        for live in (True, False):  # live chunks first; bulk ones in groups of their own
            later = [s for s in ready if not _waited_for(s, now) and s.segment.live is live]
            groups += [later[i : i + size] for i in range(0, len(later), size)]
        return firsts + groups

    def _decode(self, group: list[_Member]) -> None:
        began, tokens = time.perf_counter(), sum(len(member.pending) for member in group)
        spans: list[tuple[_Member, FrameSpan]] = []
        for member in group:
            assert member.decoder is not None
            latents = torch.stack(member.pending) if member.pending else self._no_latents(member)
            member.decoder.feed(latents, final=member.part_finished)
            member.pending = []
            span = member.decoder.next_span()
            if span is None:
                self._emit(member, torch.zeros(0))
            else:
                spans.append((member, span))
        started = time.perf_counter()
        # A live segment that arrives, or becomes due, during a bulk decode does not wait for it (on a CPU, up to a
        # second): the decode stops at HiFi-GAN's next convolution and is made again later. Its latents are in the
        # member's decoder already and its tokens stay with its next chunk, so nothing is lost.
        interrupt = None if any(member.segment.live for member in group) else self._live_waits
        try:
            for batch in _batches(spans):
                audio = decode_spans(
                    self.model.hifigan_decoder,
                    [span for _, span in batch],
                    [member.segment.speaker_embedding for member, _ in batch],
                    interrupt,
                )
                for (member, span), wav in zip(batch, audio, strict=True):
                    assert member.decoder is not None
                    self._emit(member, member.decoder.accept(span, wav).float().cpu())
        except DecodeInterrupted:
            self.decodes_interrupted += 1
            return
        frames = sum(span.length for _, span in spans)
        if frames:
            self._decode_seconds_per_frame = (time.perf_counter() - started) / frames
        self.capacity.observe_decode(tokens, time.perf_counter() - began)

    def _no_latents(self, member: _Member) -> torch.Tensor:
        width = member.segment.cond_latent.shape[-1]
        return torch.zeros(0, width, device=self.device)

    def _emit(self, member: _Member, audio: torch.Tensor) -> None:
        now = time.monotonic()
        part_end = member.part_finished
        if audio.numel() == 0 and not part_end:
            return  # nothing new to say yet: the tokens stay with the next chunk
        member.handle.put(Chunk(audio, tuple(member.tokens), member.part_index, part_end, tuple(member.focus)))
        member.tokens, member.focus = [], []
        if member.first_chunk_at is None and audio.numel():
            member.first_chunk_at = now
        member.emitted_seconds += audio.numel() / self.sample_rate
        member.target = self._next_target(member, now)
        span_frames = member.target * FRAMES_PER_TOKEN + 2 * self.decode_context
        member.expected_decode_seconds = self._decode_seconds_per_frame * span_frames
        if part_end:
            self._start_next_part(member)

    def _next_target(self, member: _Member, now: float) -> int:
        """The tokens of the member's next chunk. A bulk member's chunks double up to `chunk_growth` times its first
        (fewer, larger decodes cost less). A live member's grow only as far as its listener has audio in hand to wait
        for them: the largest that this batch makes in less than that (with REALTIME_MARGIN), never below its first
        chunk's size. A slow decoder (one CPU thread: about 1.9 s of audio per second in 40-token spans) would
        otherwise leave a gap after the first chunk: the second, twice as long, takes longer to make than the first
        takes to play."""
        first = member.segment.chunk_tokens
        bigger = min(member.target * 2, first * self.chunk_growth)
        if not member.segment.live:
            return bigger
        slack, target = member.slack(now), first
        while target < bigger:
            needed = self.capacity.chunk_seconds(len(self._members), min(target * 2, bigger))
            if needed is not None and slack < REALTIME_MARGIN * needed:
                break
            target = min(target * 2, bigger)
        return target

    def _leave(self, member: _Member) -> None:
        self._members.pop(member.key, None)
        if member in self._paused:
            self._paused.remove(member)
        if member.key in self.gpt:
            self.gpt.remove(member.key)

    def _fail_all(self, exc: BaseException) -> None:
        for member in [*self._members.values(), *self._paused]:
            self._leave(member)
            member.handle.put(Failed(exc))


def _deadline_order(segment: Segment) -> float:
    return float("-inf") if segment.deadline is None else segment.deadline


def _waited_for(member: _Member, now: float) -> bool:
    """A live member whose first chunk a listener is waiting for: it has none yet and less than LOW_WATER_SECONDS
    of earlier audio in hand (a text's first segment has none). Nobody waits for a bulk member's."""
    return member.segment.live and member.first_chunk_at is None and member.slack(now) < LOW_WATER_SECONDS


def _batches(spans: list[tuple[_Member, FrameSpan]]) -> list[list[tuple[_Member, FrameSpan]]]:
    """Spans that can share one HiFi-GAN call: all non-final ones (right padding is harmless for them), and
    final ones of equal length."""
    middles = [pair for pair in spans if not pair[1].final]
    finals: dict[int, list[tuple[_Member, FrameSpan]]] = {}
    for pair in spans:
        if pair[1].final:
            finals.setdefault(pair[1].length, []).append(pair)
    return ([middles] if middles else []) + list(finals.values())
