"""ElevenLabs' output formats (api/output_formats.py), no service needed: names, G.711 against Python's own reference
codec, PCM resampled chunk by chunk to exactly the length of one resampling, MP3 and Opus decodable by ffmpeg."""

from __future__ import annotations

import subprocess
import warnings

import numpy as np
import pytest

from api.output_formats import OUTPUT_FORMATS, alaw, output_format, ulaw
from shared.errors import InvalidInput

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # Python's reference G.711 (in the standard library up to 3.12)

EVERY_SAMPLE = np.arange(-32768, 32768, dtype=np.int16)


def test_g711_matches_the_reference_for_every_sample() -> None:
    assert ulaw(EVERY_SAMPLE).tobytes() == audioop.lin2ulaw(EVERY_SAMPLE.tobytes(), 2)
    assert alaw(EVERY_SAMPLE).tobytes() == audioop.lin2alaw(EVERY_SAMPLE.tobytes(), 2)


def test_unknown_formats_are_refused_naming_the_ones_there_are() -> None:
    with pytest.raises(InvalidInput) as refused:
        output_format("pcm_12345")
    assert "pcm_16000" in refused.value.message
    assert {"pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100", "mp3_44100_128", "ulaw_8000"} <= set(OUTPUT_FORMATS)


def _encoded(name: str, chunks: list[int]) -> tuple[bytes, int]:
    encoder = output_format(name).encoder()
    rng = np.random.default_rng(7)
    out, total = b"", 0
    try:
        for n in chunks:
            total += n
            out += encoder.chunk(rng.normal(0, 3000, n).astype(np.int16).tobytes())
        out += encoder.finish()
    finally:
        encoder.close()
    return out, total


@pytest.mark.parametrize("name", ["pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100", "pcm_48000"])
def test_pcm_streamed_in_chunks_is_as_long_as_the_audio_at_its_rate(name: str) -> None:
    out, total = _encoded(name, [4800, 7, 12345, 960, 0, 2400])
    rate = output_format(name).rate
    assert len(out) // 2 == round(total * rate / 24000)


def test_g711_streams_a_byte_a_sample_at_8_khz() -> None:
    for name in ("ulaw_8000", "alaw_8000"):
        out, total = _encoded(name, [4800, 3000])
        assert len(out) == round(total * 8000 / 24000)


@pytest.mark.parametrize("name", ["mp3_44100_128", "mp3_22050_32", "opus_48000_64"])
def test_compressed_streams_decode_at_their_rate(name: str) -> None:
    out, total = _encoded(name, [4800, 4800, 4800])
    fmt = output_format(name)
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", str(fmt.rate), "pipe:1"],
        input=out,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    decoded = len(done.stdout) // 2
    expected = total * fmt.rate // 24000
    assert expected <= decoded <= expected + 3 * 1152 * fmt.rate // 44100
