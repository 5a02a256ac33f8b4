"""One completion's text: token ids in; text that is safe to stream and the finish reason out.

It decodes incrementally (detokenizer.py) and cuts stop strings (stop_checker.py); the output
processor keeps one per completion, in the front end.
"""

from __future__ import annotations

from typing import Any

from pagoda_worker.engine.detokenizer import IncrementalDetokenizer
from pagoda_worker.engine.outputs import FinishReason
from pagoda_worker.engine.sampling_params import SamplingParams
from pagoda_worker.engine.stop_checker import EosIds, StopChecker


class CompletionText:
    """One completion's text pipeline: token ids in; text deltas that are safe to stream (decoded
    incrementally, stop strings cut) and the finish reason out."""

    def __init__(
        self,
        tokenizer: Any,
        prompt_token_ids: list[int],
        params: SamplingParams,
        eos_token_ids: EosIds,
        *,
        prompt_context: bool = False,
    ) -> None:
        # No tokenizer (a random-weight benchmark model): token ids only, the text stays empty.
        self._detokenizer = (
            IncrementalDetokenizer(tokenizer, prompt_token_ids, prompt_context=prompt_context)
            if tokenizer is not None
            else None
        )
        self._stop = StopChecker(params, eos_token_ids)
        self._num_tokens = 0
        self.text = ""

    def add_token(self, token_id: int) -> tuple[str, FinishReason | None]:
        """Returns the new text and, when this token ends the completion, why."""
        self._num_tokens += 1
        finish = self._stop.check_token(token_id, self._num_tokens)
        if finish is FinishReason.STOP:  # a stop token's own text is left out
            text, stopped = "", None
        else:
            new_text = self._detokenizer.add_tokens([token_id]) if self._detokenizer else ""
            text, stopped = self._stop.check_text(new_text)
        if finish is not None and stopped is None:
            rest, stopped = self._drain()
            text += rest
        self.text += text
        return text, stopped or finish

    def end(self) -> tuple[str, FinishReason | None]:
        """The engine ended the completion (its own reason): the held-back text, and STOP if
        a stop string is in it."""
        text, stopped = self._drain()
        self.text += text
        return text, stopped

    def _drain(self) -> tuple[str, FinishReason | None]:
        held = self._detokenizer.flush() if self._detokenizer else ""
        text, stopped = self._stop.check_text(held)
        return (text, stopped) if stopped else (text + self._stop.flush(), None)
