"""Per-tenant limits: requests and tokens per minute over a sliding minute, and concurrent
requests.

Tokens are reserved at admission (the prompt's estimate plus max_tokens) and settled with the
real usage when the request ends, so a burst of long generations cannot overshoot the minute's
budget while they run. With several gateway replicas each enforces its share of every limit
(the limit divided by the ready replicas, at least 1): no shared store, and the sum never
exceeds the limit; it is exact with one replica, approximate with several (it assumes the
Service spreads a tenant's requests evenly).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .tenants import Limits, Tenant

WINDOW_S = 60.0
UNKNOWN_WAIT_S = 1.0  # only running requests hold the budget: they end, but when is unknown


@dataclass(frozen=True)
class LimitExceeded(Exception):
    """Over a limit: 429 with Retry-After and the x-ratelimit headers."""

    limit: str  # requests, tokens or concurrent_requests
    retry_after_s: float
    headers: dict[str, str]

    def __str__(self) -> str:
        what = {
            "requests": "requests per minute",
            "tokens": "tokens per minute",
            "concurrent_requests": "concurrent requests",
        }[self.limit]
        return f"rate limit reached for {what}; retry after {math.ceil(self.retry_after_s)} s"


@dataclass
class Grant:
    """An admitted request's hold on its tenant's budget, released by `settle`."""

    limiter: TenantLimiter
    reserved_tokens: int
    settled: bool = False

    def settle(self, used_tokens: int) -> None:
        if not self.settled:
            self.settled = True
            self.limiter._settle(self, used_tokens)


@dataclass
class TenantLimiter:
    limits: Limits
    clock: Callable[[], float] = time.monotonic
    replicas: int = 1
    _requests: deque[float] = field(default_factory=deque)  # admission times
    _tokens: deque[tuple[float, int]] = field(default_factory=deque)  # (settled at, tokens)
    _token_sum: int = 0  # of _tokens
    _reserved: int = 0
    in_flight: int = 0

    def _share(self, limit: int | None) -> int | None:
        return None if limit is None else max(1, limit // self.replicas)

    def _expire(self, now: float) -> None:
        while self._requests and self._requests[0] <= now - WINDOW_S:
            self._requests.popleft()
        while self._tokens and self._tokens[0][0] <= now - WINDOW_S:
            self._token_sum -= self._tokens.popleft()[1]

    def admit(self, token_estimate: int) -> Grant:
        """Admits one request expected to use `token_estimate` tokens, or raises
        LimitExceeded; a refused request consumes nothing."""
        now = self.clock()
        self._expire(now)
        concurrent = self._share(self.limits.concurrent_requests)
        if concurrent is not None and self.in_flight >= concurrent:
            raise LimitExceeded("concurrent_requests", UNKNOWN_WAIT_S, self.headers(now))
        rpm = self._share(self.limits.requests_per_minute)
        if rpm is not None and len(self._requests) >= rpm:
            wait = self._requests[len(self._requests) - rpm] + WINDOW_S - now
            raise LimitExceeded("requests", wait, self.headers(now))
        tpm = self._share(self.limits.tokens_per_minute)
        reserve = token_estimate if tpm is None else min(token_estimate, tpm)
        if tpm is not None and self._token_sum + self._reserved + reserve > tpm:
            raise LimitExceeded("tokens", self._token_wait(now, reserve, tpm), self.headers(now))
        self._requests.append(now)
        self._reserved += reserve
        self.in_flight += 1
        return Grant(self, reserve)

    def _token_wait(self, now: float, reserve: int, tpm: int) -> float:
        """Until enough settled tokens leave the window for `reserve` to fit."""
        excess = self._token_sum + self._reserved + reserve - tpm
        for settled_at, tokens in self._tokens:
            excess -= tokens
            if excess <= 0:
                return settled_at + WINDOW_S - now
        return UNKNOWN_WAIT_S

    def _settle(self, grant: Grant, used_tokens: int) -> None:
        now = self.clock()
        self._reserved -= grant.reserved_tokens
        self.in_flight -= 1
        if used_tokens > 0:
            self._tokens.append((now, used_tokens))
            self._token_sum += used_tokens

    def headers(self, now: float | None = None) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers for the limits this tenant has; a reset is when the
        whole window is free again (the latest request, or settled tokens, leave it)."""
        now = self.clock() if now is None else now
        self._expire(now)
        headers: dict[str, str] = {}
        rpm = self._share(self.limits.requests_per_minute)
        if rpm is not None:
            reset = self._requests[-1] + WINDOW_S - now if self._requests else 0.0
            headers |= {
                "x-ratelimit-limit-requests": str(rpm),
                "x-ratelimit-remaining-requests": str(max(0, rpm - len(self._requests))),
                "x-ratelimit-reset-requests": duration(reset),
            }
        tpm = self._share(self.limits.tokens_per_minute)
        if tpm is not None:
            used = self._token_sum + self._reserved
            reset = self._tokens[-1][0] + WINDOW_S - now if self._tokens else 0.0
            headers |= {
                "x-ratelimit-limit-tokens": str(tpm),
                "x-ratelimit-remaining-tokens": str(max(0, tpm - used)),
                "x-ratelimit-reset-tokens": duration(reset),
            }
        return headers


def duration(seconds: float) -> str:
    """OpenAI's reset format: 20ms, 1.5s, 6m0s."""
    if round(seconds * 1000) < 1000:
        return f"{max(0, round(seconds * 1000))}ms"
    if (tenths := round(seconds, 1)) < 60:
        return f"{tenths:g}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s"


class TenantLimits:
    """Every tenant's limiter, and the replica count their shares divide by."""

    def __init__(self, tenants: list[Tenant], clock: Callable[[], float] = time.monotonic) -> None:
        self._limiters = {t.name: TenantLimiter(t.limits, clock) for t in tenants}
        self._clock = clock
        self._replicas = 1

    def set_replicas(self, replicas: int) -> None:
        self._replicas = max(1, replicas)
        for limiter in self._limiters.values():
            limiter.replicas = self._replicas

    def for_tenant(self, tenant: Tenant) -> TenantLimiter:
        limiter = self._limiters.get(tenant.name)
        if limiter is None:  # a tenant without an entry (anonymous): unlimited
            limiter = TenantLimiter(tenant.limits, self._clock, self._replicas)
            self._limiters[tenant.name] = limiter
        return limiter
