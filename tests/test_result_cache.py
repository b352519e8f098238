"""Results reused (shared/result_cache.py): a seeded segment asked for again is answered from the audio made the
first time, byte for byte; identical segments asked for at the same time are synthesized once; the cache stays
within RESULT_CACHE_MB, least recently used out first; /metrics shows its hits and the bytes it saved."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import redis
import requests

from shared import result_cache
from shared.jobs import SegmentWork
from shared.result_cache import Claim, Hit
from shared.tenants import DEFAULT_TENANT
from shared.voice_kind import VoiceKind
from tests.audio import read_wav
from tests.prometheus import scrape, value
from tools.localfarm import DEV_SPEAKER, Farm, RedisServer, tts_body, wait_for
from voices_store import store
from voices_store.ids import voice_key
from voices_store.latents import Latents
from workers.voices import voice_revision

SENTENCE = "The same words, the same voice and the same seed make the same audio, so it is made once."
LEAD_SECONDS = 10.0


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)

    def clear() -> None:
        for key in client.scan_iter(match=f"{result_cache.PREFIX}:*"):
            client.delete(key)

    clear()
    yield client
    clear()


def _key(text: str = SENTENCE, tenant: str = "default", **changes: Any) -> str:
    described: dict[str, Any] = {"model": "m", "voice": "builtin:Ana", "language": "en", "text": text}
    described |= {"params": {}, "seed": 7}
    return result_cache.entry_key(tenant, **(described | changes))


def _made(r: redis.Redis, key: str, pcm: bytes, limit: int = 1 << 20, marks: bytes = b"3:100") -> None:
    assert result_cache.claim(r, key, "maker", LEAD_SECONDS) is Claim.LEAD
    result_cache.store(r, key, "maker", pcm, marks, limit)


def test_a_stored_segment_is_answered_byte_for_byte(r: redis.Redis) -> None:
    key = _key()
    assert result_cache.claim(r, key, "first", LEAD_SECONDS) is Claim.LEAD
    result_cache.store(r, key, "first", b"\x01\x02" * 500, b"4:120,9:400", 1 << 20)
    assert result_cache.claim(r, key, "second", LEAD_SECONDS) == Hit(b"\x01\x02" * 500, b"4:120,9:400")
    held = result_cache.totals(r)
    assert (held.entries, held.bytes, held.misses) == (1, 1000 + len(b"4:120,9:400"), 1)


def test_a_key_names_the_tenant_and_everything_the_audio_depends_on() -> None:
    base = _key()
    assert _key() == base
    assert result_cache.entry_key(
        "default", model="m", voice="builtin:Ana", language="en", text=SENTENCE, params={"a": 1, "b": 2}, seed=7
    ) == result_cache.entry_key(
        "default", model="m", voice="builtin:Ana", language="en", text=SENTENCE, params={"b": 2, "a": 1}, seed=7
    )
    different = [
        _key(tenant="other"),
        _key(text=SENTENCE + "!"),
        _key(model="n"),
        _key(voice="saved:default/narrator@2"),
        _key(language="fr"),
        _key(params={"temperature": 0.7}),
        _key(seed=8),
    ]
    assert base not in different and len(set(different)) == len(different)
    assert _key(tenant="other").startswith(f"{result_cache.PREFIX}:other:")


def test_the_cache_holds_at_most_its_size_the_least_recently_used_out_first(r: redis.Redis) -> None:
    limit = 3000
    a, b, c, d = (_key(f"sentence {n}") for n in "abcd")
    for key in (a, b, c):
        _made(r, key, bytes(990), limit, marks=b"1:1234")  # 990 + 6 bytes each: three fit in 3 000
    assert isinstance(result_cache.claim(r, a, "reader", LEAD_SECONDS), Hit)  # a used again: b is now the oldest
    _made(r, d, bytes(990), limit, marks=b"1:1234")
    assert result_cache.claim(r, b, "reader", LEAD_SECONDS) is Claim.LEAD  # evicted
    result_cache.release(r, b, "reader")
    for key in (a, c, d):
        assert isinstance(result_cache.claim(r, key, "reader", LEAD_SECONDS), Hit)
    held = result_cache.totals(r)
    assert (held.entries, held.bytes) == (3, 3 * 996)
    _made(r, _key("too long"), bytes(limit + 1), limit)  # larger than the whole cache: not kept, nothing evicted
    assert (result_cache.totals(r).entries, result_cache.totals(r).bytes) == (3, 3 * 996)
    assert result_cache.claim(r, _key("too long"), "reader", LEAD_SECONDS) is Claim.LEAD
    for key in (a, c, d):  # an operator drops entries behind the cache's back: the count is made good
        r.delete(key)
    _made(r, _key("after"), bytes(990), limit, marks=b"1:1234")
    assert isinstance(result_cache.claim(r, _key("after"), "reader", LEAD_SECONDS), Hit)


def test_a_run_finding_the_audio_in_the_making_waits_for_it(r: redis.Redis) -> None:
    key = _key()
    assert result_cache.claim(r, key, "maker", LEAD_SECONDS) is Claim.LEAD
    assert result_cache.claim(r, key, "waiter", LEAD_SECONDS) is Claim.BUSY
    with result_cache.lead_changes(r, key) as wait:
        result_cache.store(r, key, "maker", b"\x05" * 100, b"-", 1 << 20)
        started = time.monotonic()
        wait(30.0)  # the store's message is waiting already: no need to sit out the timeout
        assert time.monotonic() - started < 10
    assert result_cache.claim(r, key, "waiter", LEAD_SECONDS) == Hit(b"\x05" * 100, b"-")


def test_a_lead_let_go_or_lapsed_passes_to_a_waiting_run(r: redis.Redis) -> None:
    key = _key()
    assert result_cache.claim(r, key, "failing", LEAD_SECONDS) is Claim.LEAD
    with result_cache.lead_changes(r, key) as wait:
        result_cache.release(r, key, "not the maker")  # only its holder lets a lead go
        assert result_cache.claim(r, key, "waiter", LEAD_SECONDS) is Claim.BUSY
        result_cache.release(r, key, "failing")
        wait(30.0)
    assert result_cache.claim(r, key, "waiter", LEAD_SECONDS) is Claim.LEAD
    result_cache.renew(r, key, "someone else", 0.001)  # not the holder's: no effect
    assert result_cache.claim(r, key, "third", LEAD_SECONDS) is Claim.BUSY
    result_cache.renew(r, key, "waiter", 0.2)  # its worker dies now: nobody renews it
    wait_for(lambda: result_cache.claim(r, key, "third", LEAD_SECONDS) is Claim.LEAD, 10, "the lead to lapse")


def test_a_voice_saved_again_is_another_voice_to_the_cache(client) -> None:  # the API's database, configured
    """The voice part of a key names a saved voice at its revision, alone or in a blend: audio made with a voice
    since overwritten is never reused; a voice deleted since has no key (the run fails as it would have)."""

    def latents(fill: float) -> Latents:
        return Latents(np.full((1, 4, 1024), fill, np.float32), np.full((1, 512, 1), fill, np.float32))

    def work(kind: VoiceKind, ref: str) -> SegmentWork:
        return SegmentWork("job", 0, "run", SENTENCE, "en", kind, ref, {"seed": 1}, 1, "epoch", 1)

    store.save_voice(DEFAULT_TENANT, "cached-narrator", latents(0.1), overwrite=True)
    blend = f"builtin=0.5=Ana|saved=0.5={voice_key(DEFAULT_TENANT, 'cached-narrator')}"
    saved = work(VoiceKind.SAVED, voice_key(DEFAULT_TENANT, "cached-narrator"))
    before = (voice_revision(saved), voice_revision(work(VoiceKind.BLEND, blend)))
    assert before == (voice_revision(saved), voice_revision(work(VoiceKind.BLEND, blend)))  # stable while unchanged
    store.save_voice(DEFAULT_TENANT, "cached-narrator", latents(0.2), overwrite=True)
    after = (voice_revision(saved), voice_revision(work(VoiceKind.BLEND, blend)))
    assert None not in before + after and before[0] != after[0] and before[1] != after[1]
    store.delete_voice(DEFAULT_TENANT, "cached-narrator")
    assert voice_revision(saved) is None and voice_revision(work(VoiceKind.BLEND, blend)) is None
    assert voice_revision(work(VoiceKind.BUILTIN, "Ana")) == "builtin:Ana"


# --- on a farm ------------------------------------------------------------------------------------------------------


def _job(farm: Farm, body: dict) -> str:
    created = requests.post(farm.url("/jobs"), json=body, headers=farm.headers, timeout=30)
    assert created.status_code == 202, created.text
    job_id: str = created.json()["id"]
    return job_id


def _audio(farm: Farm, job_id: str) -> bytes:
    return _done(farm, job_id)[1]


def _done(farm: Farm, job_id: str) -> tuple[int, bytes]:
    """(segments, PCM) of a job once it has succeeded."""
    status = farm.wait_for_state(job_id, ("succeeded", "failed"), 180)
    assert status["state"] == "succeeded", status
    response = requests.get(farm.url(f"/jobs/{job_id}/audio"), headers=farm.headers, timeout=30)
    assert response.status_code == 200, response.text
    return len(status["segments"]), read_wav(response.content)[2]


def _figures(farm: Farm) -> dict[str, float]:
    samples = scrape(farm.base_url)
    return {
        "stored": value(samples, "xtts_result_cache_hits_total", kind="stored"),
        "in_flight": value(samples, "xtts_result_cache_hits_total", kind="in_flight"),
        "misses": value(samples, "xtts_result_cache_misses_total"),
        "saved": value(samples, "xtts_result_cache_saved_bytes_total"),
        "segments": value(samples, "xtts_result_cache_entries"),
    }


def _moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}


@pytest.mark.farm
def test_a_seeded_request_asked_again_is_answered_from_stored_audio(farm: Farm) -> None:
    body = tts_body(" ".join([SENTENCE] * 4), tokens=12, seed=1234)
    before = _figures(farm)
    segments, first = _done(farm, _job(farm, body))
    assert segments == 2  # each with its own seed (1234 + n), each kept
    made = _moved(before, _figures(farm))
    assert made == {"stored": 0, "in_flight": 0, "misses": 2, "saved": 0, "segments": 2}

    again = _audio(farm, _job(farm, body))
    assert again == first  # byte for byte
    reused = _moved(before, _figures(farm))
    assert reused == {"stored": 2, "in_flight": 0, "misses": 2, "saved": len(first), "segments": 2}

    # Without a seed each request is a new take: nothing is reused, nothing kept.
    unseeded = {k: v for k, v in body.items() if k != "seed"}
    _audio(farm, _job(farm, unseeded))
    _audio(farm, _job(farm, body | {"seed": 1235}))  # another seed: another take
    assert _moved(before, _figures(farm)) == reused | {"misses": 4, "segments": 4}


@pytest.mark.farm
def test_identical_requests_at_the_same_time_share_one_synthesis(farm: Farm) -> None:
    """Both tasks reach the broker before either worker runs (the workers are stopped), so both runs start within
    moments of each other, while the segment takes seconds to make."""
    body = tts_body(SENTENCE, tokens=150, seed=99)
    before = _figures(farm)
    with farm.frozen_workers():
        jobs = [_job(farm, body), _job(farm, body)]
    first, second = (_audio(farm, job_id) for job_id in jobs)
    assert first == second and len(first) > 0
    assert _moved(before, _figures(farm)) == {
        "stored": 0,
        "in_flight": 1,
        "misses": 1,
        "saved": len(first),
        "segments": 1,
    }


@pytest.mark.farm
def test_an_elevenlabs_seed_is_the_farms_and_its_audio_is_reused(farm: Farm) -> None:
    """ElevenLabs' `seed` (up to 2**32 - 1) asks for a reproducible take: the second request is answered from the
    first one's audio."""

    def speak(seed: int) -> bytes:
        response = requests.post(
            farm.url(f"/v1/text-to-speech/{quote(DEV_SPEAKER)}"),
            params={"output_format": "pcm_24000"},
            json={"text": SENTENCE, "model_id": "eleven_flash_v2_5", "seed": seed, "max_new_tokens": 20},
            headers=farm.headers,
            timeout=300,
        )
        assert response.status_code == 200, response.text
        return response.content

    before = _figures(farm)
    first = speak(4_000_000_000)
    assert speak(4_000_000_000) == first
    assert _moved(before, _figures(farm)) | {"segments": 0} == {
        "stored": 1,
        "in_flight": 0,
        "misses": 1,
        "saved": len(first),
        "segments": 0,
    }
