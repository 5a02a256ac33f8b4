"""Readiness: whether the engine can serve now, proven by a token it produced lately.

An engine whose loop goes round (/health) may still produce nothing: a wedged device, a
step that never ends. So readiness asks for proof: a warm-up generation before the server
serves, then any token out of the engine, a client's or a canary's, no older than
`canary_max_age_s`. Under traffic the clients' tokens are the proof; an idle engine gets a
canary, a one-token generation through the engine's own `generate(..., internal=True)`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from pagoda_worker.engine.async_engine import AsyncLLMEngine, EngineDeadError
from pagoda_worker.engine.errors import InvalidRequest
from pagoda_worker.engine.sampling_params import SamplingParams

log = logging.getLogger("pagoda.server")

WARM_UP_TOKENS = 8


@dataclass
class ReadinessSettings:
    canary_interval_s: float = 10.0  # an engine idle this long gets a canary
    canary_timeout_s: float = 30.0
    canary_max_age_s: float = 35.0  # no token generated for longer: not ready
    warmup_timeout_s: float = 600.0


class Readiness:
    def __init__(self, engine: AsyncLLMEngine, settings: ReadinessSettings) -> None:
        """`engine`: loaded (its tokenizer writes the canary's prompt)."""
        self.engine = engine
        self.settings = settings
        self.warmed_up = False
        tokenizer = engine.tokenizer
        self._prompt = tokenizer.encode("ping") if tokenizer is not None else [0]
        self._canary_task: asyncio.Task | None = None

    async def warm_up(self) -> None:
        """A real generation first (EngineDeadError if none comes), then canaries."""
        await self._canary(WARM_UP_TOKENS, self.settings.warmup_timeout_s)
        if self.engine.last_token_at is None:
            raise EngineDeadError(f"warm-up generation failed: {self.engine.error or 'timed out'}")
        self.warmed_up = True
        self._canary_task = asyncio.create_task(self._canary_forever(), name="canary")

    def stop(self) -> None:
        """Before the engine stops: a canary must not see it go as a failure."""
        if self._canary_task:
            self._canary_task.cancel()

    def generation_age(self) -> float | None:
        """Seconds since the engine last produced a token (canary or traffic)."""
        if self.engine.last_token_at is None:
            return None
        return time.monotonic() - self.engine.last_token_at

    def not_ready_reasons(self) -> list[str]:
        reasons = []
        if not self.engine.is_healthy():
            reasons.append("engine loop is not healthy")
        if not self.warmed_up:
            reasons.append("warming up")
        age = self.generation_age()
        if age is None or age > self.settings.canary_max_age_s:
            reasons.append("no token generated recently (canary or traffic)")
        return reasons

    async def _canary(self, max_tokens: int, timeout_s: float) -> None:
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        try:
            async with asyncio.timeout(timeout_s):
                group = await self.engine.generate([self._prompt], params, internal=True)
                try:
                    async for _ in group:
                        pass
                finally:  # a stuck canary must not keep its batch slot and KV blocks
                    group.abort()
        except (TimeoutError, EngineDeadError, InvalidRequest) as e:
            log.error("canary generation failed: %r", e)

    async def _canary_forever(self) -> None:
        """Under traffic, real tokens keep readiness fresh; an idle engine gets a canary."""
        interval_s = self.settings.canary_interval_s
        while self.engine.error is None:
            await asyncio.sleep(interval_s)
            age = self.generation_age()
            if age is None or age >= interval_s:
                await self._canary(1, self.settings.canary_timeout_s)
