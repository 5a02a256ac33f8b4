"""Per-tenant limits on an injected clock: exact counts, Retry-After, replica shares, and the
x-ratelimit headers."""

from __future__ import annotations

import pytest
from pagoda_gateway.limits import (
    UNKNOWN_WAIT_S,
    WINDOW_S,
    LimitExceeded,
    TenantLimiter,
    TenantLimits,
    duration,
)
from pagoda_gateway.tenants import Limits, Tenant


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **limits: int) -> TenantLimiter:
    return TenantLimiter(Limits(**limits), clock)


def refusal(limiter: TenantLimiter, tokens: int = 1) -> LimitExceeded:
    with pytest.raises(LimitExceeded) as refused:
        limiter.admit(tokens)
    return refused.value


def test_requests_per_minute_admits_exactly_the_limit_and_says_when_to_retry():
    clock = Clock()
    rpm = limiter(clock, requests_per_minute=3)
    for _ in range(3):
        rpm.admit(1).settle(1)  # finished requests still count in their minute
        clock.now += 10
    refused = refusal(rpm)  # at +30: the first request (at +0) leaves the window at +60
    assert refused.limit == "requests"
    assert refused.retry_after_s == pytest.approx(30)
    assert str(refused) == "rate limit reached for requests per minute; retry after 30 s"

    clock.now = 1000.0 + WINDOW_S - 0.001
    assert refusal(rpm).retry_after_s == pytest.approx(0.001)
    clock.now = 1000.0 + WINDOW_S
    rpm.admit(1)
    assert refusal(rpm).retry_after_s == pytest.approx(10)  # now the one from +10 is oldest


def test_a_refused_request_consumes_nothing():
    clock = Clock()
    rpm = limiter(clock, requests_per_minute=1)
    rpm.admit(1)
    for _ in range(5):
        clock.now += 10
        refusal(rpm)
    clock.now = 1000.0 + WINDOW_S
    rpm.admit(1)  # the refusals did not push the window

    tpm = limiter(clock, tokens_per_minute=100)
    tpm.admit(60)
    assert refusal(tpm, 50).limit == "tokens"
    tpm.admit(40)  # the refused 50 reserved nothing

    concurrent = limiter(clock, concurrent_requests=1)
    grant = concurrent.admit(1)
    refusal(concurrent)
    assert concurrent.in_flight == 1
    grant.settle(1)
    concurrent.admit(1)


def test_tokens_are_reserved_at_admission_capped_at_the_limit():
    clock = Clock()
    tpm = limiter(clock, tokens_per_minute=100)
    grant = tpm.admit(500)  # over the whole limit: admitted alone, reserving the limit
    assert grant.reserved_tokens == 100
    assert tpm.headers()["x-ratelimit-remaining-tokens"] == "0"
    refused = refusal(tpm)
    assert (refused.limit, refused.retry_after_s) == ("tokens", UNKNOWN_WAIT_S)


def test_settling_with_real_usage_frees_the_rest_of_the_reservation():
    clock = Clock()
    tpm = limiter(clock, tokens_per_minute=100)
    tpm.admit(100).settle(30)
    assert tpm.headers()["x-ratelimit-remaining-tokens"] == "70"
    tpm.admit(70)
    clock.now += 20
    refused = refusal(tpm)  # 30 settled + 70 reserved: the 30 leave at +60
    assert refused.retry_after_s == pytest.approx(40)
    clock.now = 1000.0 + WINDOW_S
    tpm.admit(30)


def test_usage_beyond_the_reservation_counts_in_full():
    clock = Clock()
    tpm = limiter(clock, tokens_per_minute=100)
    tpm.admit(10).settle(80)
    assert tpm.headers()["x-ratelimit-remaining-tokens"] == "20"
    assert refusal(tpm, 21).limit == "tokens"


def test_token_wait_is_when_enough_settled_tokens_leave():
    clock = Clock()
    tpm = limiter(clock, tokens_per_minute=100)
    tpm.admit(40).settle(40)  # at +0
    clock.now += 10
    tpm.admit(40).settle(40)  # at +10
    clock.now += 10
    assert refusal(tpm, 60).retry_after_s == pytest.approx(40)  # the first 40 are enough
    assert refusal(tpm, 61).retry_after_s == pytest.approx(50)  # both must leave


def test_reservations_alone_give_the_unknown_wait():
    clock = Clock()
    tpm = limiter(clock, tokens_per_minute=100)
    tpm.admit(10).settle(10)
    tpm.admit(90)  # running: it ends, but nobody knows when
    assert refusal(tpm, 20).retry_after_s == UNKNOWN_WAIT_S


def test_concurrency_counts_until_settle_and_settling_twice_is_a_no_op():
    clock = Clock()
    concurrent = limiter(clock, concurrent_requests=2, tokens_per_minute=100)
    first, _ = concurrent.admit(1), concurrent.admit(1)
    refused = refusal(concurrent)
    assert (refused.limit, refused.retry_after_s) == ("concurrent_requests", UNKNOWN_WAIT_S)
    first.settle(10)
    first.settle(10)
    assert concurrent.in_flight == 1
    assert concurrent.headers()["x-ratelimit-remaining-tokens"] == "89"  # 10 used + 1 reserved
    concurrent.admit(1)
    refusal(concurrent)


def test_each_replica_enforces_its_share_of_every_limit():
    clock = Clock()
    tenant = Tenant("team-a", Limits(requests_per_minute=10, tokens_per_minute=1000))
    limits = TenantLimits([tenant], clock)
    existing = limits.for_tenant(tenant)
    limits.set_replicas(3)
    headers = existing.headers()
    assert headers["x-ratelimit-limit-requests"] == "3"  # 3 replicas x 3 <= 10
    assert headers["x-ratelimit-limit-tokens"] == "333"
    for _ in range(3):
        existing.admit(1)
    refusal(existing)

    later = limits.for_tenant(Tenant("late", Limits(requests_per_minute=10)))
    assert later.headers()["x-ratelimit-limit-requests"] == "3"

    limits.set_replicas(20)  # more replicas than the limit: each still admits one
    assert existing.headers()["x-ratelimit-limit-requests"] == "1"
    assert later.headers()["x-ratelimit-limit-requests"] == "1"
    limits.set_replicas(0)  # none ready yet (this one is starting): the whole limit
    assert later.headers()["x-ratelimit-limit-requests"] == "10"


def test_concurrency_share_is_at_least_one():
    limits = TenantLimits([], Clock())
    limits.set_replicas(4)
    concurrent = limits.for_tenant(Tenant("team-a", Limits(concurrent_requests=2)))
    concurrent.admit(1)
    assert refusal(concurrent).limit == "concurrent_requests"


def test_ratelimit_headers_report_limits_remaining_and_reset():
    clock = Clock()
    both = limiter(clock, requests_per_minute=3, tokens_per_minute=100)
    assert both.headers() == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "3",
        "x-ratelimit-reset-requests": "0ms",
        "x-ratelimit-limit-tokens": "100",
        "x-ratelimit-remaining-tokens": "100",
        "x-ratelimit-reset-tokens": "0ms",
    }
    grant = both.admit(40)
    clock.now += 15
    grant.settle(25)
    clock.now += 15
    assert both.headers() == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "30s",  # the request from +0 leaves at +60
        "x-ratelimit-limit-tokens": "100",
        "x-ratelimit-remaining-tokens": "75",
        "x-ratelimit-reset-tokens": "45s",  # the tokens settled at +15 leave at +75
    }
    both.admit(1)
    clock.now += 10
    # a reset is when the whole window is free again: the latest request (+30) leaves at +90
    assert both.headers()["x-ratelimit-reset-requests"] == "50s"


def test_a_refusal_carries_the_headers_of_that_moment():
    clock = Clock()
    rpm = limiter(clock, requests_per_minute=1)
    rpm.admit(1)
    clock.now += 0.5
    assert refusal(rpm).headers == {
        "x-ratelimit-limit-requests": "1",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "59.5s",
    }


def test_only_the_limits_a_tenant_has_get_headers():
    clock = Clock()
    assert limiter(clock, concurrent_requests=1).headers() == {}
    only_tokens = limiter(clock, tokens_per_minute=5)
    assert set(only_tokens.headers()) == {
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    }


def test_an_unlimited_tenant_is_never_refused():
    clock = Clock()
    unlimited = TenantLimits([], clock).for_tenant(Tenant("anonymous", Limits()))
    grants = [unlimited.admit(10**9) for _ in range(1000)]
    assert unlimited.in_flight == 1000
    for grant in grants:
        grant.settle(10**9)
    assert unlimited.headers() == {}
    unlimited.admit(10**9)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"),
        (-0.2, "0ms"),
        (0.02, "20ms"),
        (0.5, "500ms"),
        (1.0, "1s"),
        (1.5, "1.5s"),
        (12.34, "12.3s"),
        (59.5, "59.5s"),
        (59.96, "1m0s"),
        (0.9996, "1s"),
        (60.0, "1m0s"),
        (75.4, "1m15s"),
        (360.0, "6m0s"),
    ],
)
def test_duration_uses_openais_reset_format(seconds, text):
    assert duration(seconds) == text
