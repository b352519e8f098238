"""A voice agent's last step: an LLM's tokens piped into the farm as they are written, the audio played (here:
written to a file) as it comes, both at once.

    python client/examples/agent_pipe.py --url http://127.0.0.1:8000 --voice "Claribel Dervla" -o reply.pcm

The tokens here come from a stand-in for an LLM (a text cut into words, 20 a second); with a real one, pass its
stream of text deltas to `pipe` instead. The output is raw 16-bit PCM at 24 kHz mono (`ffplay -f s16le -ar 24000
-ac 1 reply.pcm` plays it)."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

from xtts_client import SpeakingSession, XTTSClient

REPLY = "Sure, I can help with that. Your order left our warehouse this morning. It should reach you on Thursday."


async def stand_in_llm(text: str, tokens_per_second: float = 20.0) -> AsyncIterator[str]:
    """Text deltas as an LLM streams them: a word (with its space) at a time."""
    for word in text.split(" "):
        await asyncio.sleep(1 / tokens_per_second)
        yield word + " "


async def pipe(tokens: AsyncIterator[str], session: SpeakingSession) -> None:
    async for token in tokens:
        await session.send(token)
    await session.end()


async def main(url: str, voice: str, out: Path) -> None:
    farm = XTTSClient(url)
    started = time.monotonic()
    async with farm.speak_stream(voice) as session:
        writer = asyncio.create_task(pipe(stand_in_llm(REPLY), session))
        with out.open("wb") as sink:
            async for audio in session:
                if sink.tell() == 0:
                    print(f"first audio after {time.monotonic() - started:.2f} s")
                sink.write(audio)
        await writer
    print(f"{out}: {out.stat().st_size // 2 / 24000:.2f} s of audio; said: {session.spoken!r}")
    print(f"session {session.session_id}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--voice", default="Claribel Dervla")
    parser.add_argument("-o", "--out", type=Path, default=Path("reply.pcm"))
    args = parser.parse_args()
    asyncio.run(main(args.url, args.voice, args.out))
