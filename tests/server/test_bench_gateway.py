"""bench/gateway_affinity.py on CPU with stories260K: the whole run at its smoke sizes (real
`pagoda serve` workers and `pagoda gateway`s as subprocesses), and the pieces that decide what
it reports. No performance is asserted: the 2-core machine's numbers are noise."""

from __future__ import annotations

import json
import math

import pytest

from tests.server.bench_scripts import load_bench

pytestmark = pytest.mark.timeout(240)


def test_a_smoke_run_measures_both_routings_and_the_gateways_overhead(tmp_path, capsys):
    bench = load_bench("gateway_affinity")
    result_file = tmp_path / "result.json"
    argv = ["--smoke", "--out-dir", str(tmp_path), "--json", str(result_file),
            "--client-processes", "1"]  # fmt: skip
    assert bench.main(argv) == 0

    result = json.loads(result_file.read_text())
    sizes = result["sizes"]
    turns = sizes["conversations"] * sizes["turns"]
    prefix, round_robin = result["phases"]
    assert (prefix["routing"], round_robin["routing"]) == ("prefix", "round-robin")
    for phase in (prefix, round_robin):
        assert (phase["summary"]["completed"], phase["summary"]["failed"]) == (turns, 0)
        assert phase["summary"]["ttft_ms"]["p50"] > 0 and phase["summary"]["e2e_ms"]["p50"] > 0
        assert phase["prefix_cache_queries"] > 0
        assert 0 <= phase["hit_rate"] <= 1
        assert phase["hit_rate"] == round(
            phase["prefix_cache_hits"] / phase["prefix_cache_queries"], 4
        )
        assert 1 <= len(phase["shares"]) <= 2
        assert math.isclose(sum(phase["shares"].values()), 1.0)
    # Round-robin alternates over its two workers; each phase has workers of its own.
    assert sorted(round_robin["shares"].values()) == [0.5, 0.5]
    assert not set(prefix["shares"]) & set(round_robin["shares"])
    assert result["ttft_p50_ratio"] > 0

    overhead = result["overhead"]
    assert len(overhead["rounds"]) == sizes["overhead_rounds"]
    for round_ in overhead["rounds"]:
        assert sorted(round_) == ["direct", "gateway"]
        for row in round_.values():
            wanted = sizes["overhead_streams"] * bench.REQUESTS_PER_STREAM
            assert (row["completed"], row["failed"]) == (wanted, 0)
    assert sorted(overhead["added_ms"]) == ["e2e_p50", "e2e_p99", "ttft_p50", "ttft_p99"]

    printed = capsys.readouterr().out
    assert "hit rate" in printed and "TTFT p50 round-robin / prefix" in printed
    assert "added by the gateway" in printed


def test_the_added_latency_is_the_median_of_each_rounds_difference():
    bench = load_bench("gateway_affinity")

    def row(ttft_p50, ttft_p99, e2e_p50, e2e_p99):
        return {"ttft_ms": {"p50": ttft_p50, "p99": ttft_p99},
                "e2e_ms": {"p50": e2e_p50, "p99": e2e_p99}}  # fmt: skip

    rounds = [
        {"direct": row(10, 20, 100, 200), "gateway": row(10.5, 21, 101, 203)},
        {"direct": row(30, 40, 300, 400), "gateway": row(30.2, 40, 300, 390)},  # a slow round
        {"direct": row(10, 20, 100, 200), "gateway": row(11, 25, 102, 201)},
    ]
    assert bench.added_latency(rounds) == {
        "ttft_p50": 0.5, "ttft_p99": 1.0, "e2e_p50": 1.0, "e2e_p99": 1.0,
    }  # fmt: skip


def test_workers_share_a_gpu_one_after_another_with_growing_budgets():
    bench = load_bench("gateway_affinity")

    def layout(*placement) -> list[tuple]:
        return [(s.gpu, s.rank, s.gpu_memory_utilization) for s in bench.place_workers(*placement)]

    assert layout(2, None, [], None) == [(None, 0, None), (None, 0, None)]  # CPU
    assert layout(2, None, ["3"], 0.4) == [("3", 0, 0.4), ("3", 1, 0.8)]
    assert layout(2, None, ["0", "1"], None) == [("0", 0, 0.9), ("1", 0, 0.9)]
    assert layout(4, 0.5, ["0", "1"], None) == [
        ("0", 0, 0.45), ("0", 1, 0.9), ("1", 0, 0.45), ("1", 1, 0.9),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="need more than the 1 visible"):
        bench.place_workers(2, 1.0, ["0"], None)


def test_gpus_per_worker_is_auto_or_one_over_a_whole_number():
    bench = load_bench("gateway_affinity")
    assert bench.gpus_per_worker("auto") is None
    assert bench.gpus_per_worker("0.5") == 0.5 and bench.gpus_per_worker("1") == 1.0
    for wrong in ("0.3", "2", "0"):
        with pytest.raises(Exception, match="1/N"):
            bench.gpus_per_worker(wrong)
    with pytest.raises(SystemExit):
        bench.parse_args(["--workers", "1"])


def test_conversations_share_the_system_prompts_and_differ_from_their_first_message():
    bench = load_bench("gateway_affinity")
    sizes = bench.SMOKE_SIZES
    conversations = bench.make_conversations(sizes, seed=7)
    assert len(conversations) == sizes.conversations
    assert len({c.system for c in conversations}) == sizes.system_prompts
    assert all(len(c.user_messages) == len(c.reply_tokens) == sizes.turns for c in conversations)
    replies = [n for c in conversations for n in c.reply_tokens]
    assert sizes.reply_tokens.low <= min(replies) <= max(replies) <= sizes.reply_tokens.high
    assert len({c.user_messages[0] for c in conversations}) == sizes.conversations
    assert all(len(c.system.split()) == sizes.system_words for c in conversations)
    assert bench.make_conversations(sizes, seed=7) == conversations
