"""Prometheus metrics under vLLM's names, so vLLM dashboards, KEDA scalers and the Gateway
API inference extension read Pagoda as they read vLLM; Pagoda's own extras use `pagoda:`.

Request metrics come from the engine's outputs (AsyncLLMEngine calls `on_output` for every
output of a client request; canaries are left out). Engine gauges are read from the latest
stats snapshot when Prometheus scrapes. Both live in the front-end process: the engine process
sends its stats and loop timings with every report, so one scrape of one process sees them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from pagoda_worker.engine.loop_timing import PassTiming
from pagoda_worker.engine.messages import EngineStats
from pagoda_worker.engine.outputs import FinishReason, RequestOutput

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0]
_TTFT_BUCKETS += [2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
_ITL_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5]
_ITL_BUCKETS += [0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0]
_LATENCY_BUCKETS = [0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0]
_LATENCY_BUCKETS += [20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]


def token_buckets(max_model_len: int) -> list[float]:
    """1, 2, 5, 10, 20, 50, ... up to the context window (as vLLM does)."""
    buckets: list[float] = []
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale > max_model_len:
                return buckets
            buckets.append(float(step * scale))
        scale *= 10


@dataclass
class WorkerGauges:
    """What the scrape reads from the worker at that moment."""

    stats: EngineStats
    heartbeat_age_s: float
    slowest_pass: PassTiming
    most_pass_cpu_s: float
    generation_age_s: float | None  # None until the first token
    ready: bool


def loading_metrics() -> bytes:
    """What a scrape reads before a model is served: not ready, loading."""
    registry = CollectorRegistry()
    for name, doc, value in (
        ("pagoda:ready", "1 when /ready answers 200.", 0.0),
        ("pagoda:loading", "1 while the model loads and warms up.", 1.0),
    ):
        Gauge(name, doc, registry=registry).set(value)
    return generate_latest(registry)


class ServerMetrics:
    def __init__(self, model_name: str, max_model_len: int) -> None:
        self.model_name = model_name
        self.registry = CollectorRegistry()
        labels = ["model_name"]

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, [*labels, *extra], registry=self.registry)

        def histogram(name: str, doc: str, buckets: list[float]) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=self.registry)

        tokens = token_buckets(max_model_len)
        self.prompt_tokens = counter("vllm:prompt_tokens", "Prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Generation tokens produced.")
        self.request_success = counter(
            "vllm:request_success", "Finished sequences, by finish reason.", ("finished_reason",)
        )
        for reason in FinishReason:  # every series from the start, as vLLM: increase() sees 0->1
            self.request_success.labels(model_name, str(reason))
        self.ttft = histogram(
            "vllm:time_to_first_token_seconds", "Time to first token.", _TTFT_BUCKETS
        )
        self.itl = histogram("vllm:inter_token_latency_seconds", "Between tokens.", _ITL_BUCKETS)
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds", "End-to-end request latency.", _LATENCY_BUCKETS
        )
        self.queue_time = histogram(
            "vllm:request_queue_time_seconds", "Waiting to be scheduled.", _LATENCY_BUCKETS
        )
        self.request_prompt_tokens = histogram(
            "vllm:request_prompt_tokens", "Prompt tokens per request.", tokens
        )
        self.request_generation_tokens = histogram(
            "vllm:request_generation_tokens", "Generated tokens per request.", tokens
        )
        self.rejected = counter(
            "pagoda:requests_rejected", "Requests refused before reaching the engine.", ("reason",)
        )
        self.timeouts = counter("pagoda:request_timeouts", "Requests aborted by the timeout.")
        self._last_token_time: dict[str, float] = {}
        self._gauges: Callable[[], WorkerGauges] | None = None
        self.registry.register(_WorkerCollector(self))

    def read_gauges_from(self, gauges: Callable[[], WorkerGauges]) -> None:
        self._gauges = gauges

    def reject(self, reason: str) -> None:
        self.rejected.labels(self.model_name, reason).inc()

    def timeout(self) -> None:
        self.timeouts.labels(self.model_name).inc()

    def on_output(self, output: RequestOutput) -> None:
        name, times, rid = self.model_name, output.metrics, output.request_id
        new_tokens = sum(len(c.new_token_ids) for c in output.outputs)
        if new_tokens:
            self.generation_tokens.labels(name).inc(new_tokens)
            last = times.last_token_time
            assert last is not None, "the engine stamps every output that carries tokens"
            previous = self._last_token_time.get(rid)
            if previous is None:  # its prefill is done: as vLLM, count the prompt now, once
                self.prompt_tokens.labels(name).inc(len(output.prompt_token_ids))
            else:
                self.itl.labels(name).observe(last - previous)
            self._last_token_time[rid] = last
        if not output.finished:
            return
        self._last_token_time.pop(rid, None)
        self.request_prompt_tokens.labels(name).observe(len(output.prompt_token_ids))
        for completion in output.outputs:
            self.request_success.labels(name, str(completion.finish_reason)).inc()
            self.request_generation_tokens.labels(name).observe(len(completion.token_ids))
        arrival = times.arrival_time
        for histogram, at in (
            (self.queue_time, times.scheduled_time),
            (self.ttft, times.first_token_time),
            (self.e2e, times.finished_time),
        ):
            if at is not None:
                histogram.labels(name).observe(at - arrival)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _WorkerCollector:
    """Engine gauges and counters, read from the latest snapshot at scrape time."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def collect(self):
        if self.metrics._gauges is None:
            return
        now = self.metrics._gauges()
        labels = [self.metrics.model_name]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=["model_name"])
            family.add_metric(labels, value)
            return family

        def labelled(name: str, doc: str, label: str, values: dict) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=["model_name", label])
            for key, value in values.items():
                family.add_metric([*labels, key], value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=["model_name"])
            family.add_metric(labels, value)
            return family

        yield gauge("pagoda:ready", "1 when /ready answers 200.", float(now.ready))
        yield GaugeMetricFamily(
            "pagoda:loading", "1 while the model loads and warms up.", value=0.0
        )
        slowest = now.slowest_pass
        yield gauge(
            "pagoda:engine_loop_longest_pass_seconds",
            "The engine loop's longest pass so far (commands + one step).",
            slowest.wall_s,
        )
        parts = {**slowest.parts, "gc": slowest.gc_s}
        yield labelled(
            "pagoda:engine_loop_longest_pass_part_seconds",
            "Where the longest pass went (laps; gc overlaps them).",
            "part",
            parts,
        )
        yield gauge(
            "pagoda:engine_loop_most_pass_cpu_seconds",
            "The most CPU time the engine loop spent in any one pass (its own work, without "
            "waits for the GIL or for a CPU).",
            now.most_pass_cpu_s,
        )
        yield labelled(
            "pagoda:engine_loop_longest_pass_cpu_seconds",
            "CPU time during the longest pass: the engine loop's own, and the whole engine "
            "process's (far below the wall time: other processes had the CPU).",
            "cpu",
            {"engine_thread": slowest.thread_cpu_s, "process": slowest.process_cpu_s},
        )
        yield gauge(
            "pagoda:engine_heartbeat_age_seconds",
            "Seconds since the engine loop last went round.",
            now.heartbeat_age_s,
        )
        if now.generation_age_s is not None:
            yield gauge(
                "pagoda:last_generation_age_seconds",
                "Seconds since the engine last produced a token (canary or traffic).",
                now.generation_age_s,
            )
        stats = now.stats
        yield gauge("vllm:num_requests_running", "Requests in the batch.", stats.num_running)
        yield gauge("vllm:num_requests_waiting", "Requests waiting.", stats.num_waiting)
        yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage (1 = full).", stats.kv_cache_usage)
        yield counter(
            "vllm:prefix_cache_queries", "Prompt tokens looked up.", stats.prefix_cache_queries
        )
        yield counter(
            "vllm:prefix_cache_hits", "Prompt tokens found in the cache.", stats.prefix_cache_hits
        )
        yield counter("vllm:num_preemptions", "Preempted sequences.", stats.num_preemptions)
        yield gauge("pagoda:kv_cache_blocks", "KV-cache blocks in total.", stats.num_gpu_blocks)
        yield gauge("pagoda:kv_cache_free_blocks", "KV-cache blocks free.", stats.num_free_blocks)
        yield gauge("pagoda:kv_cache_capacity_tokens", "KV-cache tokens.", stats.kv_capacity_tokens)
