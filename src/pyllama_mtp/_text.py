"""Token bytes to text for streaming: whole UTF-8 characters only, and stop strings cut exactly.

Sessions, the chat CLI and the server all turn generated tokens into text pieces; a token may end
inside a UTF-8 character, and a stop string may span tokens, so text that could still turn into
a stop string is held back until the next piece decides it.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextStream:
    """Feed token bytes with :meth:`push`; each call returns the text that is safe to show.

    After a stop string appears, :attr:`stopped` is true, the text before it has been returned
    and every later push returns "".
    """

    def __init__(self, stops: Sequence[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = tuple(s for s in stops if s)
        self._held = ""  # decoded text not shown yet: it may be the start of a stop string
        self.stopped = False

    def push(self, data: bytes) -> str:
        if self.stopped:
            return ""
        return self._emit(self._held + self._decoder.decode(data), final=False)

    def finish(self) -> str:
        """The text still held back, at the end of the generation."""
        if self.stopped:
            return ""
        return self._emit(self._held + self._decoder.decode(b"", final=True), final=True)

    def _emit(self, text: str, *, final: bool) -> str:
        cut = min((i for i in (text.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = 0 if final else self._partial_stop_len(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def _partial_stop_len(self, text: str) -> int:
        """Length of the longest tail of ``text`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
