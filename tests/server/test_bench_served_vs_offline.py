"""bench/served_vs_offline.py on CPU with stories260K: the whole run at a tiny size (offline,
then a real `pagoda serve` subprocess), and the pieces that decide what it reports."""

from __future__ import annotations

import json

import pytest

from tests.server.bench_scripts import load_bench

pytestmark = pytest.mark.timeout(180)


def test_a_tiny_run_compares_the_servers_with_the_offline_engine(tmp_path, capsys):
    bench = load_bench("served_vs_offline")
    result_file = tmp_path / "result.json"
    argv = ["--preset", "stories", "--num-requests", "8", "--prompt-len", "4-16",
            "--output-len", "8", "--rates", "50", "--out-dir", str(tmp_path),
            "--json", str(result_file), "--client-processes", "2",
            "--variant", "coalesce=--stream-coalesce"]  # fmt: skip
    assert bench.main(argv) == 0

    result = json.loads(result_file.read_text())
    offline = result["offline"]
    assert offline["tokens_per_s"] > 0 and offline["decode_step_ms"] > 0
    assert offline["decode_batch"] == 8
    assert result["client_processes"] == 2
    after, coalesce = result["servers"]
    assert (after["label"], after["flags"]) == ("after", [])
    assert (coalesce["label"], coalesce["flags"]) == ("coalesce", ["--stream-coalesce"])
    for server in (after, coalesce):
        assert server["error"] == ""
        assert (server["burst"]["completed"], server["burst"]["failed"]) == (8, 0)
        assert server["burst"]["ttft_ms"]["p50"] > 0 and server["burst"]["tpot_ms"]["p50"] > 0
        assert server["burst_vs_offline"] > 0 and server["tpot_vs_decode_step"] > 0
        assert [(row["rate"], row["failed"]) for row in server["poisson"]] == [(50.0, 0)]
    printed = capsys.readouterr().out
    assert "offline:" in printed and "x offline" in printed and "rate/s" in printed
    assert "2 client process(es)" in printed
    tables = printed.split("served, burst")[1].splitlines()
    assert [line.split()[0] for line in tables if "coalesce" in line] == ["coalesce"] * 2


def test_variants_are_named_flags_after_this_checkout_and_before_the_old_one(tmp_path):
    bench = load_bench("served_vs_offline")
    args = bench.parse_args(["--preset", "stories", "--out-dir", str(tmp_path),
                             "--variant", "coalesce=--stream-coalesce --max-num-seqs 4",
                             "--before", str(tmp_path)])  # fmt: skip
    runs = bench.planned_runs(args)
    assert [(run.label, run.flags) for run in runs] == [
        ("after", []),
        ("coalesce", ["--stream-coalesce", "--max-num-seqs", "4"]),
        ("before", []),
    ]
    assert runs[1].checkout == runs[0].checkout and runs[1].log.endswith("server-coalesce.log")
    for wrong in ("before=--stream-coalesce", "a/b=--stream-coalesce", "coalesce"):
        with pytest.raises(SystemExit):
            bench.parse_args(["--preset", "stories", "--variant", wrong])


async def test_a_server_that_exits_early_fails_with_its_last_log_lines(tmp_path, stories_dir):
    bench = load_bench("served_vs_offline")
    port, log = bench.free_port(), tmp_path / "server.log"
    command = bench.serve_command(stories_dir, "float32", {"max_num_seqs": 0}, port)
    process = bench.start_server(command, bench.throughput.REPO, log)
    try:
        with pytest.raises(bench.ServerFailed, match=r"(?s)exited with status 2.*max_num_seqs"):
            await bench.wait_ready(process, f"http://127.0.0.1:{port}", 60, log)
    finally:
        bench.stop_server(process)


def test_engine_settings_become_serve_flags():
    bench = load_bench("served_vs_offline")
    given = ["load_format=dummy", "max-num-seqs=256", "enforce_eager=true",
             "async_scheduling=false", "gpu_memory_utilization=0.8"]  # fmt: skip
    settings = dict(bench.engine_arg(text) for text in given)
    assert settings["max_num_seqs"] == 256  # JSON values for the offline EngineConfig
    assert bench.engine_flags(settings) == [
        "--load-format", "dummy", "--max-num-seqs", "256", "--enforce-eager",
        "--no-async-scheduling", "--gpu-memory-utilization", "0.8",
    ]  # fmt: skip


def test_the_decode_step_is_the_median_near_the_largest_decode_batch():
    bench = load_bench("served_vs_offline")
    Step = bench.Step
    steps = [
        Step(decode_only=False, batch=100, seconds=9.0),  # a prefill: never counted
        Step(decode_only=True, batch=100, seconds=0.010),
        Step(decode_only=True, batch=95, seconds=0.012),
        Step(decode_only=True, batch=91, seconds=0.030),
        Step(decode_only=True, batch=80, seconds=0.001),  # below 90% of the largest batch
        Step(decode_only=True, batch=0, seconds=0.0),
    ]
    assert bench.decode_step_time(steps) == (100, 12.0, 3)
    assert bench.decode_step_time(steps[:1]) == (None, None, 0)
