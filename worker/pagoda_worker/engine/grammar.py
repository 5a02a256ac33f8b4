"""Grammar-constrained decoding with llguidance: each constrained sequence has a matcher that
knows which tokens may come next; the sampler masks every other token.

llguidance compiles a JSON schema in about 2 ms and computes a mask over Qwen's 151k tokens in
~16 µs (bench/NOTES.md), so a new schema does not stall the engine loop. JSON is generated with
json.dumps's separators and no other whitespace: a model cannot pad its answer with spaces
until max_tokens.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import llguidance
import llguidance.hf
import torch

from pagoda_worker.engine.errors import InvalidRequest
from pagoda_worker.engine.sampling_params import StructuredOutput

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions  # in the stubs only

JSON_LAYOUT: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}
ANY_OBJECT = '{"type": "object"}'
CACHED_GRAMMARS = 256


def _grammar(structured: StructuredOutput) -> str:
    schema = structured.json_schema or ANY_OBJECT
    return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_LAYOUT)


def schema_error(structured: StructuredOutput) -> str | None:
    """Why this schema cannot constrain a completion, or None. Needs no tokenizer: the server
    checks requests with it before they reach the engine."""
    try:
        return llguidance.LLMatcher.validate_grammar(_grammar(structured)) or None
    except ValueError as e:
        return str(e)


class Grammars:
    """The matchers of one model's tokenizer. Compiled grammars are kept by schema (least
    recently used dropped first); each sequence gets its own copy."""

    def __init__(self, tokenizer, vocab_size: int, eos_token_ids: set[int]) -> None:
        # Masks cover the model's logits and every token the tokenizer knows (some tokenizers
        # add tokens past the model's vocabulary; the sampler cuts the mask to the logits).
        self.vocab_size = max(vocab_size, len(tokenizer))
        self.tokenizer = llguidance.hf.from_tokenizer(
            tokenizer, n_vocab=self.vocab_size, eos_token=sorted(eos_token_ids)
        )
        self.executor = llguidance.LLExecutor()
        self._compiled: OrderedDict[StructuredOutput, llguidance.LLMatcher] = OrderedDict()

    def matcher(self, structured: StructuredOutput) -> llguidance.LLMatcher:
        """A fresh matcher; InvalidRequest naming the problem if the schema does not compile."""
        compiled = self._compiled.pop(structured, None)
        if compiled is None:
            compiled = self._compile(structured)
        self._compiled[structured] = compiled
        while len(self._compiled) > CACHED_GRAMMARS:
            self._compiled.popitem(last=False)
        return compiled.deep_copy()

    def _compile(self, structured: StructuredOutput) -> llguidance.LLMatcher:
        try:
            compiled = llguidance.LLMatcher(self.tokenizer, _grammar(structured))
        except ValueError as e:  # a schema llguidance cannot even read
            raise InvalidRequest("structured_output", str(e)) from e
        if compiled.is_error():
            raise InvalidRequest("structured_output", compiled.get_error())
        return compiled

    def masks(self, matchers: list[llguidance.LLMatcher]) -> torch.Tensor:
        """[len(matchers), ceil(vocab / 32)] int32 in pinned memory: bit j of word w set when
        token 32w + j may come next. Filled in parallel, outside the GIL."""
        words = (self.vocab_size + 31) // 32
        pinned = torch.cuda.is_available()  # the copy to the device need not wait
        bits = torch.empty((len(matchers), words), dtype=torch.int32, pin_memory=pinned)
        self.executor.unsafe_compute_mask_ptr(
            [(m, row) for row, m in enumerate(matchers)], bits.data_ptr(), words * 4, len(matchers)
        )
        return bits
