"""Each ready backend's load, read from the worker's own /metrics exposition."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from pagoda_gateway.backends import Backend, BackendLoad, BackendPool
from pagoda_gateway.load_scraper import LoadScraper, parse_load
from pagoda_worker.engine.loop_timing import PassTiming
from pagoda_worker.engine.messages import EngineStats
from pagoda_worker.server.metrics import ServerMetrics, WorkerGauges, loading_metrics


def worker_exposition(waiting: int, running: int, kv_usage: float) -> str:
    """What a serving worker's /metrics says (the worker's own registry and collector)."""
    stats = EngineStats(
        num_running=running,
        num_waiting=waiting,
        kv_cache_usage=kv_usage,
        num_gpu_blocks=64,
        num_free_blocks=16,
        kv_capacity_tokens=1024,
        prefix_cache_queries=100,
        prefix_cache_hits=40,
        num_preemptions=0,
    )
    metrics = ServerMetrics("stories260K", max_model_len=512)
    metrics.read_gauges_from(
        lambda: WorkerGauges(stats, 0.01, PassTiming(), 0.0, generation_age_s=1.0, ready=True)
    )
    return metrics.render().decode()


def test_parse_load_reads_a_workers_exposition():
    load = parse_load(worker_exposition(waiting=2, running=5, kv_usage=0.75))
    assert load == BackendLoad(waiting=2, kv_usage=0.75)


def test_parse_load_sums_over_label_sets():
    text = """# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="a"} 2.0
vllm:num_requests_waiting{model_name="b"} 3.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="a"} 1.0
vllm:num_requests_running{model_name="b"} 4.0
"""
    assert parse_load(text) == BackendLoad(waiting=5, kv_usage=0)


def test_missing_families_read_as_zero():
    assert parse_load(loading_metrics().decode()) == BackendLoad()  # a worker still loading
    assert parse_load("") == BackendLoad()


class FakeWorker:
    """A /metrics that serves `exposition` (or `status`) and counts its scrapes."""

    def __init__(self, exposition: str = "", status: int = 200) -> None:
        self.exposition = exposition
        self.status = status
        self.scrapes = 0
        self.scraped_twice = asyncio.Event()
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self.server = TestServer(app)

    async def _metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        if self.scrapes >= 2:
            self.scraped_twice.set()
        return web.Response(text=self.exposition, status=self.status)

    def backend(self, name: str) -> Backend:
        return Backend(name, str(self.server.make_url("")).rstrip("/"))


async def test_the_scraper_stores_the_loads_of_ready_backends_only():
    busy = FakeWorker(worker_exposition(waiting=4, running=2, kv_usage=0.5))
    broken = FakeWorker(status=500)
    not_ready = FakeWorker(worker_exposition(waiting=9, running=9, kv_usage=0.9))
    async with (
        busy.server,
        broken.server,
        not_ready.server,
        aiohttp.ClientSession() as session,
    ):
        pool = BackendPool()
        pool.set_ready("active", [busy.backend("busy")])
        pool.set_ready("standby", [broken.backend("broken")])
        scraper = asyncio.create_task(LoadScraper(pool, session, interval_s=0.02).run())
        try:
            # a second scrape starts only after the first one's loads are stored
            await asyncio.wait_for(busy.scraped_twice.wait(), 5)
            assert pool.loads == {"busy": BackendLoad(waiting=4, kv_usage=0.5)}
            assert pool.load(busy.backend("busy")) == 4.5
            assert broken.scrapes >= 1

            busy.exposition = worker_exposition(waiting=1, running=6, kv_usage=0.5)
            busy.scrapes, busy.scraped_twice = 0, asyncio.Event()
            await asyncio.wait_for(busy.scraped_twice.wait(), 5)
            assert pool.loads["busy"] == BackendLoad(waiting=1, kv_usage=0.5)
        finally:
            scraper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scraper
        assert not_ready.scrapes == 0
