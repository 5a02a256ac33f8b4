"""bench/serving.py against a live server: it measures, and a failed request is a row, not a
crash of the whole run."""

from __future__ import annotations

import pytest
from pagoda_worker.engine.messages import Faults

from tests.server.bench_scripts import load_bench

pytestmark = pytest.mark.timeout(120)


def bench_args(bench, server, *extra: str):
    return bench.parse_args(
        ["--url", server.url, "--num-requests", "4", "--prompt-len", "4-8", *extra]
    )


@pytest.mark.parametrize("client_processes", ["1", "2"])
async def test_a_rate_reports_every_request(server, client_processes):
    bench = load_bench("serving")
    args = bench_args(bench, server, "--output-len", "5", "--client-processes", client_processes)
    row = await bench.run_rate(args, rate=50.0, model="stories260K")
    assert (row["completed"], row["failed"]) == (4, 0)
    assert row["output_token_throughput"] > 0
    assert row["ttft_ms"]["p50"] > 0 and row["e2e_ms"]["p99"] >= row["ttft_ms"]["p50"]


async def test_requests_past_the_timeout_fail_without_ending_the_run(server):
    bench = load_bench("serving")
    args = bench_args(bench, server, "--output-len", "400", "--timeout", "0.05")
    row = await bench.run_rate(args, rate=50.0, model="stories260K")
    assert (row["completed"], row["failed"]) == (0, 4)
    assert row["errors"] == ["TimeoutError()"]


async def test_an_error_event_mid_stream_fails_the_request(make_server):
    server = make_server()
    # The first token goes out, then the device is lost.
    server.engine.set_faults(Faults(fail_after_steps=2, fail_message="device lost"))
    bench = load_bench("serving")
    args = bench_args(bench, server, "--output-len", "50", "--num-requests", "1")
    row = await bench.run_rate(args, rate=50.0, model="stories260K")
    assert (row["completed"], row["failed"]) == (0, 1)
    assert "device lost" in row["errors"][0]


async def test_client_processes_send_shares_and_give_results_back_in_arrival_order(server):
    bench = load_bench("serving")
    # Lengths that tell the requests apart: each result must be its own arrival's.
    arrivals = [bench.Arrival(0.01 * i, [5] * (4 + i), 3 + i) for i in range(5)]
    results, duration = await bench.send(server.url, "stories260K", arrivals, 60, processes=2)
    assert [(r.ok, r.prompt_tokens, r.output_tokens) for r in results] == [
        (True, 4 + i, 3 + i) for i in range(5)
    ]
    row = bench.summarize("burst", results, duration)
    assert 0 < row["ttft_ms"]["p50"] <= row["e2e_ms"]["p50"] < duration * 1000
    assert row["tpot_ms"]["p50"] > 0
