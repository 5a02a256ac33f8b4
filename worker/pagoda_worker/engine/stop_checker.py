"""When a completion ends, and which of its text may be shown (CompletionText applies it to a
completion's tokens, completion_text.py).

A completion stops at EOS (unless ignore_eos) or a stop token id -- that token stays in the token
ids but its text is left out, as in vLLM -- at max_tokens, or when a stop string appears in its
text: the stop string and anything after it are cut. Stop strings are matched as if the text
arrived one character at a time, so the result does not depend on how tokens split it: the stop
string that is complete first wins, and of those complete at the same character, the longest.
"""

from __future__ import annotations

from collections.abc import Collection

from pagoda_worker.engine.outputs import FinishReason
from pagoda_worker.engine.sampling_params import SamplingParams

EosIds = int | Collection[int] | None  # some models (Llama 3) end turns with several tokens


class StopChecker:
    def __init__(self, params: SamplingParams, eos_token_ids: EosIds) -> None:
        stop_ids = set(params.stop_token_ids)
        if not params.ignore_eos:
            stop_ids.update(_as_set(eos_token_ids))
        self._stop_token_ids = frozenset(stop_ids)
        self._max_tokens = params.max_tokens
        self._stop_strings = tuple(params.stop)
        self._held = ""  # text that might be the start of a stop string
        self.stopped_by_string = False

    def check_token(self, token_id: int, num_output_tokens: int) -> FinishReason | None:
        """`num_output_tokens` counts `token_id`."""
        if token_id in self._stop_token_ids:
            return FinishReason.STOP
        if num_output_tokens >= self._max_tokens:
            return FinishReason.LENGTH
        return None

    def check_text(self, text_delta: str) -> tuple[str, FinishReason | None]:
        """Returns the text that is safe to show now, and STOP once a stop string appeared (the
        text returned then ends where the stop string began). Text that could still turn out to
        be the start of a stop string is held back, so shown text never has to be taken back."""
        if not self._stop_strings:
            return text_delta, None
        text = self._held + text_delta
        stop_at = first_stop(text, self._stop_strings)
        if stop_at is not None:
            self._held = ""
            self.stopped_by_string = True
            return text[:stop_at], FinishReason.STOP
        keep = longest_partial_stop(text, self._stop_strings)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep], None

    def flush(self) -> str:
        """The held-back text, for a completion that ended for another reason."""
        held, self._held = self._held, ""
        return held


def _as_set(ids: EosIds) -> set[int]:
    if ids is None:
        return set()
    return {ids} if isinstance(ids, int) else set(ids)


def first_stop(text: str, stop_strings: tuple[str, ...]) -> int | None:
    """Where the stop string that is complete first begins (the longest on a tie), if any."""
    best: tuple[int, int] | None = None  # (end, start)
    for stop in stop_strings:
        start = text.find(stop)
        if start != -1:
            candidate = (start + len(stop), start)
            best = candidate if best is None else min(best, candidate)
    return None if best is None else best[1]


def longest_partial_stop(text: str, stop_strings: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that a stop string starts with (but does not equal)."""
    longest = 0
    for stop in stop_strings:
        tail = text[max(0, len(text) - len(stop) + 1) :]
        start = tail.find(stop[0])
        while start != -1 and len(tail) - start > longest:
            if stop.startswith(tail[start:]):
                longest = len(tail) - start
                break
            start = tail.find(stop[0], start + 1)
    return longest
