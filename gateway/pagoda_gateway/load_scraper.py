"""Each ready backend's load, read from its /metrics once per interval in the background (never
on a request's path): requests waiting there, and KV-cache usage."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .backends import Backend, BackendLoad, BackendPool

log = logging.getLogger("pagoda.gateway.load")
GAUGES = {
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_usage",
}


def parse_load(text: str) -> BackendLoad:
    load = BackendLoad()
    for family in text_string_to_metric_families(text):
        if (field := GAUGES.get(family.name)) and family.samples:
            setattr(load, field, sum(sample.value for sample in family.samples))
    return load


class LoadScraper:
    def __init__(
        self,
        pool: BackendPool,
        session: aiohttp.ClientSession,
        interval_s: float = 1.0,
    ) -> None:
        self.pool = pool
        self.session = session
        self.interval_s = interval_s

    async def run(self) -> None:
        while True:
            backends = self.pool.all_ready()
            loads = await asyncio.gather(*(self._scrape(b) for b in backends))
            still_ready = {b.name for b in self.pool.all_ready()}  # some may have left meanwhile
            for backend, load in zip(backends, loads, strict=True):
                # a failed scrape keeps the last load: a pod that cannot answer must not look idle
                if load is not None and backend.name in still_ready:
                    self.pool.loads[backend.name] = load
            await asyncio.sleep(self.interval_s)

    async def _scrape(self, backend: Backend) -> BackendLoad | None:
        try:
            timeout = aiohttp.ClientTimeout(total=self.interval_s)
            async with self.session.get(backend.url + "/metrics", timeout=timeout) as response:
                if response.status != 200:
                    return None
                return parse_load(await response.text())
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            log.debug("scraping %s failed: %s", backend.name, e)
            return None
