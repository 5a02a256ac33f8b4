"""`pagoda serve` as an operator runs it: settings from --config and flags, a clear word when
something is wrong, and a SIGTERM drain that lets in-flight streams finish."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import openai
import pytest

from pagoda.cli import build_parser, main
from pagoda.commands.serve import UsageError, engine_config
from tests.processes import get, start_serve, wait_ready

pytestmark = pytest.mark.timeout(120)


def parse(*argv: str):
    argv = ["serve", *argv]
    return build_parser(argv).parse_args(argv)


def test_config_file_then_explicit_flags(tmp_path, stories_dir):
    config = tmp_path / "engine.json"
    config.write_text(json.dumps({"block_size": 32, "max_num_seqs": 8, "enforce_eager": True}))
    args = parse("--model", str(stories_dir), "--config", str(config), "--max-num-seqs", "4")
    settings = engine_config(args)
    assert settings.block_size == 32  # from the file
    assert settings.max_num_seqs == 4  # the flag wins
    assert settings.enforce_eager is True
    assert settings.max_num_batched_tokens == 8192  # the default
    assert settings.model == str(stories_dir)


def test_a_flag_equal_to_the_default_still_overrides_the_file(tmp_path, stories_dir):
    config = tmp_path / "engine.json"
    config.write_text(json.dumps({"block_size": 32, "enable_prefix_caching": False}))
    args = parse("--model", str(stories_dir), "--config", str(config), "--block-size", "16")
    assert engine_config(args).block_size == 16
    args = parse("--config", str(config), "--model", "m", "--enable-prefix-caching")
    assert engine_config(args).enable_prefix_caching is True


def test_the_config_file_may_name_the_model(tmp_path, stories_dir):
    config = tmp_path / "engine.json"
    config.write_text(json.dumps({"model": str(stories_dir)}))
    assert engine_config(parse("--config", str(config))).model == str(stories_dir)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"block_size": 16, "max_batch": 4, "colour": "red"}, "unknown keys: colour, max_batch"),
        ({"block_size": "16"}, "block_size: Input should be a valid integer"),
        ({"block_size": 0}, "invalid engine setting block_size=0"),
        ([1, 2], "must hold a JSON object"),
        ("{not json", "is not valid JSON"),
    ],
)
def test_bad_config_files_are_refused_clearly(tmp_path, content, message):
    config = tmp_path / "engine.json"
    config.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(UsageError, match=re.escape(message)):
        engine_config(parse("--model", "m", "--config", str(config)))


def test_a_model_that_does_not_load_exits_1(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "nothing"), "--port", "0"]) == 1
    assert str(tmp_path / "nothing") in capsys.readouterr().err


@pytest.mark.parametrize(
    ("broken", "says"),
    [
        ("missing folder", "does not exist: pass a Hugging Face model folder"),
        ("truncated weights", "model.safetensors is not a readable safetensors file"),
    ],
)
def test_a_broken_model_ends_the_log_with_one_clear_line(tmp_path, stories_dir, broken, says):
    """In a pod the log's last lines become the termination message that status quotes."""
    model = tmp_path / "model"
    if broken == "truncated weights":
        shutil.copytree(stories_dir, model)
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    command = [sys.executable, "-m", "pagoda.cli", "serve", "--port", "0", "--model", str(model)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    last = done.stderr.rstrip().splitlines()[-1]
    assert last.startswith("pagoda serve: ") and str(model) in last and says in last, done.stderr
    assert "Traceback" not in done.stderr


def test_sigterm_drains_in_flight_streams_then_exits_0(stories_dir):
    started = start_serve("--model", str(stories_dir), "--drain-timeout", "60")
    proc, url = started.proc, started.url
    try:
        wait_ready(url)
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)
        stream = client.completions.create(
            model="stories260K",
            prompt="Once upon a time",
            max_tokens=480,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        text = next(stream).choices[0].text

        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        while (ready := get(url + "/ready"))[0] == 200:
            assert time.monotonic() - signalled < 0.5, "/ready stayed true after SIGTERM"
        assert ready == (503, {"ready": False, "reasons": ["draining"]})
        with pytest.raises(openai.InternalServerError) as refused:
            client.completions.create(model="stories260K", prompt="Once", max_tokens=2)
        assert refused.value.status_code == 503
        assert refused.value.body["code"] == "draining"
        assert proc.poll() is None  # still serving the stream

        chunks = list(stream)
        text += "".join(c.choices[0].text for c in chunks if c.choices)
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
        assert chunks[-1].usage.completion_tokens == 480
        assert text
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_while_loading_exits_promptly(tmp_path, stories_dir):
    """A pod deleted while its model loads must not linger until Kubernetes kills it."""
    big = dict(json.loads((stories_dir / "config.json").read_text()), hidden_size=1024,
               intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
               num_key_value_heads=8, head_dim=64, vocab_size=32000)  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(big))
    started = start_serve("--model", str(tmp_path), "--load-format", "dummy")
    proc, url = started.proc, started.url
    try:
        time.sleep(0.5)
        assert get(url + "/health") == (503, {"status": "loading"})  # still loading
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_second_sigterm_during_the_drain_exits_at_once_and_says_what_it_cut(stories_dir):
    command = [sys.executable, "-m", "pagoda.cli", "serve", "--port", "0",
               "--model", str(stories_dir), "--drain-timeout", "60"]  # fmt: skip
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    try:
        for line in proc.stderr:
            if found := re.search(r"probes answer on (http://[\d.]+:\d+)/health", line):
                url = found.group(1)
                break
        reader = threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True)
        reader.start()
        wait_ready(url)
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)
        stream = client.completions.create(
            model="stories260K", prompt="Once", max_tokens=480, stream=True,
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        next(stream)
        proc.send_signal(signal.SIGTERM)
        # Short: the 480-token stream takes ~1.1 s here and must outlast this on any machine.
        time.sleep(0.1)
        assert proc.poll() is None  # draining: the stream still runs
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(openai.APIError, match="shutting down"):
            for _ in stream:
                pass
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - signalled < 5  # not the 60 s drain timeout
        reader.join(timeout=10)  # the log is complete: the process closed its stderr
        assert any("second signal" in line and "cut 1 generation" in line for line in log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_late_signals_during_an_idle_drain_still_exit_0(stories_dir):
    """SIGTERMs keep coming while the process exits: it must never die of one (-15)."""
    started = start_serve("--model", str(stories_dir))
    proc, url = started.proc, started.url
    try:
        wait_ready(url)
        while proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.005)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
