"""Text that arrives as it is written (a voice agent's LLM, token by token) cut into pieces worth speaking: a piece is
complete at the end of a sentence, at a flush, after an idle gap (the caller's clock: `IncomingText.flush`) or when
it has grown long enough without a sentence end (then cut at its last space). Each piece is spoken the moment it is
complete, so audio never waits for more text than the sentence being said.

Every character written belongs to exactly one piece, spaces included, in order: the pieces put together are the
text as written, which is what the alignment of a context's audio covers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# A sentence ends at . ! ? ; … (or their CJK forms), with any closing quotes or brackets after them, followed by
# whitespace: "3.5" and "e.g.," are not ends, "Dr. Smith" is (a short piece costs a little prosody, never audio).
_SENTENCE_END = re.compile(r"""[.!?;…。！？；]+["'”’)\]»]*(?=\s)|[。！？；]+""")
_EAGER_SENTENCE_END = re.compile(r"""[.!?;…。！？；]+["'”’)\]»]*(?=\s|$)""")
_SPACE = re.compile(r"\s")


@dataclass
class IncomingText:
    """The text of one context not yet spoken. `long_after`: a piece without a sentence end is cut (at its last
    space) once it holds this many characters. `eager`: a sentence end that ends the text so far is an end already
    (the writer sends whole sentences: ElevenLabs' auto_mode), not only once whitespace follows it."""

    long_after: int = 250
    eager: bool = False
    _buffer: str = field(default="", repr=False)

    @property
    def pending(self) -> str:
        return self._buffer

    def add(self, text: str) -> list[str]:
        """Take a piece of text; returns the pieces it completes (possibly none)."""
        self._buffer += text
        pieces = []
        while (cut := self._cut()) is not None:
            pieces.append(self._buffer[:cut])
            self._buffer = self._buffer[cut:]
        return pieces

    def flush(self) -> str | None:
        """Whatever is pending, as one piece (None when there is nothing to say, e.g. only spaces: they stay, to
        be said with what follows)."""
        if not any(ch.isalnum() for ch in self._buffer):
            return None
        piece, self._buffer = self._buffer, ""
        return piece

    def _cut(self) -> int | None:
        """Where the first complete piece ends (after the whitespace that follows its sentence end), or None."""
        pattern = _EAGER_SENTENCE_END if self.eager else _SENTENCE_END
        for match in pattern.finditer(self._buffer):
            end = match.end()
            while end < len(self._buffer) and self._buffer[end].isspace():
                end += 1
            if any(ch.isalnum() for ch in self._buffer[:end]):
                return end
        if len(self._buffer) >= self.long_after:
            spaces = [m.end() for m in _SPACE.finditer(self._buffer, 0, self.long_after)]
            return spaces[-1] if spaces and spaces[-1] > 1 else self.long_after
        return None
