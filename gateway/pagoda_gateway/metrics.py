"""The gateway's Prometheus metrics: per tenant (requests, tokens, rate-limited requests,
latency), and the state of routing (ready backends by role, hold queue, retries)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .backends import ROLES, BackendPool

LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "pagoda_gateway_requests",
            "Requests answered, by tenant and HTTP status.",
            ["tenant", "code"],
            registry=r,
        )
        self.tokens = Counter(
            "pagoda_gateway_tokens",
            "Tokens used, by tenant: prompt and completion.",
            ["tenant", "kind"],
            registry=r,
        )
        self.rate_limited = Counter(
            "pagoda_gateway_rate_limited",
            "Requests refused with 429 by a tenant limit.",
            ["tenant", "limit"],
            registry=r,
        )
        self.in_flight = Gauge(
            "pagoda_gateway_requests_in_flight",
            "Requests being served, by tenant.",
            ["tenant"],
            registry=r,
        )
        self.duration = Histogram(
            "pagoda_gateway_request_duration_seconds",
            "Whole request time, by tenant.",
            ["tenant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_byte = Histogram(
            "pagoda_gateway_time_to_first_byte_seconds",
            "Until the first byte of the answer went out (a stream's first token), by tenant.",
            ["tenant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def watch(
        self,
        pool: BackendPool,
        hold_length: Callable[[], int],
        retries: Callable[[], int],
        replicas: Callable[[], int],
    ) -> None:
        self.registry.register(_RoutingCollector(pool, hold_length, retries, replicas))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _RoutingCollector:
    def __init__(
        self,
        pool: BackendPool,
        hold_length: Callable[[], int],
        retries: Callable[[], int],
        replicas: Callable[[], int],
    ) -> None:
        self.pool = pool
        self.hold_length = hold_length
        self.retries = retries
        self.replicas = replicas

    def collect(self):
        ready = GaugeMetricFamily(
            "pagoda_gateway_ready_backends", "Ready worker pods, by role.", labels=["role"]
        )
        for role in ROLES:
            ready.add_metric([role], len(self.pool.ready(role)))
        yield ready
        load = GaugeMetricFamily(
            "pagoda_gateway_backend_load",
            "Requests this gateway has in flight at each worker plus those waiting there.",
            labels=["backend"],
        )
        for backend in self.pool.all_ready():
            load.add_metric([backend.name], self.pool.load(backend))
        yield load
        yield GaugeMetricFamily(
            "pagoda_gateway_hold_queue_length",
            "Requests waiting for a worker to become ready (scale on it).",
            value=self.hold_length(),
        )
        yield CounterMetricFamily(
            "pagoda_gateway_retries",
            "Requests sent to another worker after one failed before its first byte.",
            value=self.retries(),
        )
        yield GaugeMetricFamily(
            "pagoda_gateway_replicas",
            "Ready gateway replicas; each enforces this share of the tenants' limits.",
            value=self.replicas(),
        )
