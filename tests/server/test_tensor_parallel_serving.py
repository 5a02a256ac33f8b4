"""`pagoda serve --tensor-parallel-size 2` on CPU: the engine process starts its follower rank,
serves what the unsplit engine serves, takes the follower down with it on SIGTERM, and fails
/health as soon as the follower dies."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import openai
import pytest
from pagoda_worker.engine.llm import LLM
from pagoda_worker.engine.sampling_params import SamplingParams

from tests.processes import get, start_serve, wait_ready
from tests.server.observe import poll_ready

pytestmark = pytest.mark.timeout(120)

FOLLOWER = "pagoda_worker.parallel.follower"


def followers_running() -> list[int]:
    """Pids of tensor-parallel followers on this machine."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if FOLLOWER in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:  # it exited while we looked
            continue
    return pids


def test_a_split_model_serves_the_same_text_and_stops_with_the_server(stories_dir):
    expected = (
        LLM(str(stories_dir))
        .generate("Once upon a time", SamplingParams(temperature=0.0, max_tokens=40))[0]
        .outputs[0]
        .text
    )
    started = start_serve(
        "--model", str(stories_dir), "--tensor-parallel-size", "2", "--cpu-threads", "1"
    )
    proc = started.proc
    try:
        wait_ready(started.url)
        assert followers_running(), "the engine runs a follower rank"
        client = openai.OpenAI(base_url=started.url + "/v1", api_key="x", max_retries=0)
        answer = client.completions.create(
            model="stories260K", prompt="Once upon a time", max_tokens=40, temperature=0
        )
        assert answer.choices[0].text == expected
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert followers_running() == [], "the follower outlived the server"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_dead_follower_fails_health_and_is_named_in_the_log(stories_dir):
    """The kubelet restarts a pod whose /health fails: a lost rank must not leave a worker that
    looks alive and answers nothing."""
    started = start_serve(
        "--model", str(stories_dir), "--tensor-parallel-size", "2", "--cpu-threads", "1"
    )
    try:
        wait_ready(started.url)
        [follower] = followers_running()
        os.kill(follower, signal.SIGKILL)
        client = openai.OpenAI(base_url=started.url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as failed:
            client.completions.create(model="stories260K", prompt="Once", max_tokens=5)
        assert failed.value.status_code == 503
        assert get(started.url + "/health")[0] == 503
        named = f"tensor-parallel rank 1 (pid {follower}) exited (-9)"
        deadline = time.monotonic() + 10  # the log is read as it comes
        while named not in "".join(started.log):
            assert time.monotonic() < deadline, "".join(started.log[-20:])
            time.sleep(0.05)
    finally:
        started.stop()


async def test_a_dead_follower_fails_health_while_idle_before_any_canary(make_server):
    """No request and no canary comes (one every 600 s): the loop itself notices the lost
    rank, and /health says which one."""
    server = make_server(
        {"tensor_parallel_size": 2, "cpu_threads": 1}, readiness={"canary_interval_s": 600}
    )
    await poll_ready(server, 200)
    [follower] = followers_running()
    os.kill(follower, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (reply := await server.fetch("GET", "/health")).status != 503:
        assert time.monotonic() < deadline, "/health stayed up without a rank"
        await asyncio.sleep(0.05)
    assert f"tensor-parallel rank 1 (pid {follower}) exited (-9)" in reply.json()["error"]
