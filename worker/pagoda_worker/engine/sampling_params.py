"""How one request wants its tokens chosen and when it wants to stop."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from pagoda_worker.engine.errors import InvalidRequest

MAX_STOP_STRINGS = 16
MAX_LOGPROBS = 20
MAX_LOGIT_BIAS = 300  # biased tokens per request, as OpenAI caps it
LOGIT_BIAS_RANGE = 100.0  # -100 bans a token, +100 forces it
# Below this a temperature is greedy, as in vLLM: dividing logits by ~1e-39 overflows float32.
GREEDY_BELOW_TEMPERATURE = 1e-5


@dataclass(frozen=True)
class StructuredOutput:
    """Constrain a completion to JSON: text that parses and matches `json_schema` (JSON text),
    or with no schema any JSON object. The completion ends where the JSON does."""

    json_schema: str | None = None


class SamplingParamsError(InvalidRequest):
    """A sampling parameter is out of range. An InvalidRequest like any other refusal; its own
    type lets `pagoda generate` name the flag at fault."""


@dataclass
class SamplingParams:
    n: int = 1  # completions returned
    best_of: int | None = None  # completions generated (>= n); the n most likely are returned
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 disables
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int = 16
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None  # top-N logprobs per generated token; 0 = only the chosen one
    prompt_logprobs: int | None = None  # the same for each prompt token after the first
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit
    structured_output: StructuredOutput | None = None

    def __post_init__(self) -> None:
        self.validate()

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW_TEMPERATURE

    @property
    def num_seqs(self) -> int:
        """Sequences generated: best_of when it is given, else n."""
        return self.best_of or self.n

    @property
    def selects_best(self) -> bool:
        """Whether more completions are generated than returned (ranked by likelihood)."""
        return self.num_seqs > self.n

    @property
    def needs_logprob(self) -> bool:
        """Whether the sampler must compute the chosen token's logprob."""
        return self.logprobs is not None or self.selects_best

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise SamplingParamsError(f.name, "must be a finite number")
        bias = self.logit_bias
        checks = [
            ("n", self.n >= 1, "must be at least 1"),
            ("best_of", self.best_of is None or self.best_of >= self.n, "must be >= n"),
            ("temperature", self.temperature >= 0.0, "must be >= 0"),
            ("top_p", 0.0 < self.top_p <= 1.0, "must be in (0, 1]"),
            ("top_k", self.top_k >= 0, "must be >= 0 (0 disables)"),
            ("min_p", 0.0 <= self.min_p <= 1.0, "must be in [0, 1]"),
            ("repetition_penalty", self.repetition_penalty > 0.0, "must be > 0"),
            ("presence_penalty", -2.0 <= self.presence_penalty <= 2.0, "must be in [-2, 2]"),
            ("frequency_penalty", -2.0 <= self.frequency_penalty <= 2.0, "must be in [-2, 2]"),
            ("max_tokens", self.max_tokens >= 1, "must be at least 1"),
            (
                "stop",
                len(self.stop) <= MAX_STOP_STRINGS,
                f"at most {MAX_STOP_STRINGS} stop strings",
            ),
            ("stop", all(self.stop), "stop strings must not be empty"),
            (
                "logprobs",
                self.logprobs is None or 0 <= self.logprobs <= MAX_LOGPROBS,
                f"must be in [0, {MAX_LOGPROBS}]",
            ),
            (
                "prompt_logprobs",
                self.prompt_logprobs is None or 0 <= self.prompt_logprobs <= MAX_LOGPROBS,
                f"must be in [0, {MAX_LOGPROBS}]",
            ),
            ("logit_bias", len(bias) <= MAX_LOGIT_BIAS, f"at most {MAX_LOGIT_BIAS} tokens"),
            ("logit_bias", all(t >= 0 for t in bias), "token ids must be >= 0"),
            (
                "logit_bias",
                all(math.isfinite(b) and abs(b) <= LOGIT_BIAS_RANGE for b in bias.values()),
                f"biases must be in [-{LOGIT_BIAS_RANGE:g}, {LOGIT_BIAS_RANGE:g}]",
            ),
        ]
        for name, ok, message in checks:
            if not ok:
                raise SamplingParamsError(name, message)
