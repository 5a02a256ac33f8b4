"""Served against offline: the same prompts through the engine in this process and through a
fresh `pagoda serve`, to measure what serving costs (issue #14: the engine in its own process).

    python bench/served_vs_offline.py --preset stories     # CPU: the shipped stories260K
    python bench/served_vs_offline.py --model /models/qwen3-8b-shape \
        --engine-arg load_format=dummy --before /src/pagoda-old       # GPU: after and before

Offline: every request added at once, step() until all finish; total tok/s = (prompt + output
tokens) / seconds, and the decode step time at batch B: the median step() of the decode-only
steps whose batch is at least 90% of the largest (B). A step is decode-only when, as it starts,
nothing waits and every request has its first token (engine.stats() and the step outputs). The
timed offline pass follows an untimed one (Triton's compiles), and reports TTFT and TPOT from
the engine's own timestamps, defined as the served runs' are: a burst's TPOT includes the
prefill chunks of later requests that share the early requests' steps, offline as served.
Served: one fresh server per run, PYTHONPATH set to its checkout: this checkout ("after"), then
each --variant NAME=FLAGS (this checkout, `pagoda serve` given FLAGS too), then --before's. First
the offline prompts all at once (burst, streamed): tok/s against offline, TPOT against the decode
step. Then Poisson arrivals at each of --rates with fresh prompts (no prefix-cache hits). The
requests go out from --client-processes processes (serving.py's): one alone, parsing thousands
of chunks a second, falls behind and reads the chunks in clumps.
The offline engine and the servers never hold the device at the same time. --engine-arg
KEY=VALUE (EngineConfig names) goes to the offline engine and, as --key value, to each server;
dtype=... replaces the preset's dtype on both sides.
Exit status 0 only if every request of every run succeeded.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import ModuleType

import aiohttp
import torch

BENCH = Path(__file__).resolve().parent


def load_sibling(name: str) -> ModuleType:
    """A script beside this one, by path (bench/ is no package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


serving = load_sibling("serving")
throughput = load_sibling("throughput")  # puts the checkout's packages on sys.path

from pagoda_worker.engine.llm_engine import LLMEngine  # noqa: E402
from pagoda_worker.engine.sampling_params import SamplingParams  # noqa: E402

PRESETS = {name: throughput.PRESETS[name] for name in ("anchor-a", "stories")}
DECODE_BATCH_SHARE = 0.9  # decode steps this close to the largest batch count as "at batch B"
REQUEST_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 30
# Half the cores: the server's own processes need the rest.
DEFAULT_CLIENT_PROCESSES = max(1, min(8, (os.cpu_count() or 1) // 2))


# ----- offline ---------------------------------------------------------------------------------


@dataclass
class Step:
    decode_only: bool
    batch: int  # sequences running as the step began
    seconds: float


@dataclass
class OfflineRun:
    seconds: float
    tokens_per_s: float  # prompt + output tokens
    decode_batch: int | None  # the largest batch of a decode-only step
    decode_step_ms: float | None  # median decode-only step at >= 90% of that batch
    decode_steps: int  # how many steps that median is over
    preemptions: int  # when not 0, some prompts were computed twice
    ttft_ms: dict[str, float]  # percentiles, from the engine's own request timestamps
    tpot_ms: dict[str, float]  # the same definition as the served runs' TPOT
    steps: list[Step]


@dataclass
class Latencies:
    ttft_s: list[float] = field(default_factory=list)
    tpot_s: list[float] = field(default_factory=list)


def step_until_done(
    engine: LLMEngine, prompts: list[list[int]], output_len: int
) -> tuple[list[Step], float, Latencies]:
    """Add every request at once and step until all finish; returns the steps, the seconds and
    each request's TTFT and TPOT."""
    params = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True)
    start = time.perf_counter()
    for prompt in prompts:
        engine.add_request(prompt, params)
    started: set[str] = set()  # requests with a token: their prompts are computed
    steps, produced, latencies = [], 0, Latencies()
    while engine.has_unfinished_requests():
        stats = engine.stats()
        decode_only = stats.num_waiting == 0 and len(started) == len(prompts)
        began = time.perf_counter()
        outputs = engine.step()
        steps.append(Step(decode_only, stats.num_running, time.perf_counter() - began))
        for output in outputs:
            new_tokens = len(output.outputs[0].new_token_ids)
            produced += new_tokens
            if new_tokens:
                started.add(output.request_id)
            if output.finished:
                times = output.metrics
                latencies.ttft_s.append(times.first_token_time - times.arrival_time)
                latencies.tpot_s.append(
                    (times.last_token_time - times.first_token_time) / max(output_len - 1, 1)
                )
    throughput.sync()
    seconds = time.perf_counter() - start
    if produced != output_len * len(prompts):
        raise RuntimeError(f"offline: {produced} tokens, not {output_len} per request")
    return steps, seconds, latencies


def decode_step_time(steps: list[Step]) -> tuple[int | None, float | None, int]:
    """(B, median ms, steps) of the decode-only steps at >= 90% of the largest batch B."""
    decodes = [s for s in steps if s.decode_only and s.batch > 0]
    if not decodes:
        return None, None, 0
    batch = max(s.batch for s in decodes)
    near = [s.seconds for s in decodes if s.batch >= DECODE_BATCH_SHARE * batch]
    return batch, round(statistics.median(near) * 1e3, 3), len(near)


def run_offline(
    model_dir: Path, preset: throughput.Preset, prompts: list[list[int]], engine_args: dict
) -> OfflineRun:
    engines = [throughput.start_engine(model_dir, preset, engine_args)]
    # A whole untimed pass first, on other prompts of the same lengths (reversed: no prefix
    # hits): Triton compiles kernel variants as new shapes come, and caches them on disk, so
    # without it the offline run pays compiles that every server after it is spared.
    step_until_done(engines[0], [p[::-1] for p in prompts], preset.output_len)
    steps, seconds, latencies = step_until_done(engines[0], prompts, preset.output_len)
    preemptions = engines[0].stats().num_preemptions
    # free() must get the last reference: while one is held here, the engine's device memory
    # stays in this process's allocator and the server started next finds the card full.
    throughput.free(engines.pop())
    if torch.cuda.is_available():
        left = torch.cuda.memory_reserved() / 2**30
        print(f"offline engine freed: {left:.2f} GiB still reserved here", file=sys.stderr)
    tokens = sum(len(p) for p in prompts) + preset.output_len * len(prompts)
    batch, step_ms, decode_steps = decode_step_time(steps)
    return OfflineRun(
        seconds=round(seconds, 3),
        tokens_per_s=round(tokens / seconds, 1),
        decode_batch=batch,
        decode_step_ms=step_ms,
        decode_steps=decode_steps,
        preemptions=preemptions,
        ttft_ms=serving.percentiles(latencies.ttft_s),
        tpot_ms=serving.percentiles(latencies.tpot_s),
        steps=steps,
    )


# ----- served ----------------------------------------------------------------------------------


class ServerFailed(Exception):
    """The server died or never got ready; the message ends with its last log lines."""


@dataclass
class ServerRun:
    label: str  # "after" (this checkout), a variant's name or "before"
    checkout: str
    log: str
    flags: list[str] = field(default_factory=list)  # a variant's extra `pagoda serve` flags
    burst: dict | None = None  # serving.summarize's row
    burst_vs_offline: float | None = None  # burst tok/s / offline tok/s
    tpot_vs_decode_step: float | None = None  # burst TPOT p50 / offline decode step
    tpot_vs_offline: float | None = None  # burst TPOT p50 / offline TPOT p50
    poisson: list[dict] = field(default_factory=list)
    error: str = ""

    @property
    def rows(self) -> list[dict]:
        return ([self.burst] if self.burst else []) + self.poisson


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def engine_flags(engine_args: dict) -> list[str]:
    """EngineConfig settings as `pagoda serve` flags; switches are --name or --no-name."""
    flags = []
    for key, value in engine_args.items():
        name = key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        else:
            flags += [f"--{name}", str(value)]
    return flags


def serve_command(model_dir: Path, dtype: str, engine_args: dict, port: int) -> list[str]:
    return [
        sys.executable, "-m", "pagoda.cli", "serve", "--model", str(model_dir),
        "--host", "127.0.0.1", "--port", str(port), "--dtype", dtype, *engine_flags(engine_args),
    ]  # fmt: skip


def start_server(command: list[str], checkout: Path, log_path: Path) -> subprocess.Popen:
    # `-m` puts the working directory first on sys.path: it must be the checkout too.
    # The checkout first; what the caller's PYTHONPATH adds (carried wheels) after it.
    roots = [checkout / root for root in ("", "worker", "gateway", "operator")]  # either layout
    path = os.pathsep.join(filter(None, [*map(str, roots), os.environ.get("PYTHONPATH")]))
    env = os.environ | {"PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:  # a file, not a pipe: nobody has to read it for it to run
        return subprocess.Popen(
            command, cwd=checkout, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()  # SIGTERM: the server drains and exits
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def log_tail(log_path: Path) -> str:
    lines = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(f"    {line}" for line in lines)


async def wait_ready(process: subprocess.Popen, url: str, timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerFailed(
                    f"the server exited with status {process.returncode} before it was ready; "
                    f"its last log lines:\n{log_tail(log_path)}"
                )
            try:
                async with session.get(url + "/ready") as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass  # not listening yet
            await asyncio.sleep(0.5)
    raise ServerFailed(
        f"the server was not ready after {timeout_s:.0f} s; its last log lines:\n"
        f"{log_tail(log_path)}"
    )


@dataclass
class ServedWorkload:
    burst: list[list[int]]  # the offline run's prompts
    output_len: int
    poisson: serving.Workload  # its seed moves per rate
    rates: list[float]
    client_processes: int


async def measure(run: ServerRun, url: str, workload: ServedWorkload) -> None:
    model = await serving.served_model(url)
    burst = [serving.Arrival(0.0, prompt, workload.output_len) for prompt in workload.burst]
    print(f"{run.label}: burst of {len(burst)} requests", file=sys.stderr, flush=True)
    sent = await serving.send(url, model, burst, REQUEST_TIMEOUT_S, workload.client_processes)
    run.burst = serving.summarize("burst", *sent)
    for number, rate in enumerate(workload.rates, start=1):
        fresh = replace(workload.poisson, seed=workload.poisson.seed + number)
        arrivals = serving.poisson_arrivals(fresh, rate)
        print(f"{run.label}: Poisson {rate}/s", file=sys.stderr, flush=True)
        sent = await serving.send(
            url, model, arrivals, REQUEST_TIMEOUT_S, workload.client_processes
        )
        run.poisson.append(serving.summarize(rate, *sent))


async def run_server(
    run: ServerRun, command: list[str], url: str, workload: ServedWorkload, start_timeout_s: float
) -> None:
    log_path = Path(run.log)
    print(f"{run.label}: starting `{shlex.join(['pagoda', 'serve', *run.flags])}` from "
          f"{run.checkout}, log {log_path}", file=sys.stderr, flush=True)  # fmt: skip
    process = start_server(command, Path(run.checkout), log_path)
    try:
        await wait_ready(process, url, start_timeout_s, log_path)
        await measure(run, url, workload)
    except ServerFailed as e:
        run.error = str(e)
    finally:
        stop_server(process)


def compare_with_offline(run: ServerRun, offline: OfflineRun) -> None:
    if not run.burst or not run.burst["completed"]:
        return
    run.burst_vs_offline = round(run.burst["total_token_throughput"] / offline.tokens_per_s, 3)
    tpot = run.burst["tpot_ms"].get("p50")
    if tpot and offline.decode_step_ms:
        run.tpot_vs_decode_step = round(tpot / offline.decode_step_ms, 3)
    if tpot and offline.tpot_ms:
        run.tpot_vs_offline = round(tpot / offline.tpot_ms["p50"], 3)


# ----- report ----------------------------------------------------------------------------------

BURST_COLUMNS = [  # (heading, width, cell) as in serving.print_table; the server's goes first
    ("done", 5, lambda row: row["completed"]),
    ("fail", 4, lambda row: row["failed"]),
    ("tok/s", 9, lambda row: row["total_token_throughput"]),
    ("x offline", 9, lambda row: row["x_offline"]),
    ("TTFT p50/p99 ms", 18, lambda row: serving.p50_p99(row["ttft_ms"])),
    ("TPOT p50/p99 ms", 16, lambda row: serving.p50_p99(row["tpot_ms"])),
    ("TPOT/step", 9, lambda row: row["x_step"]),
    ("TPOT/offl", 9, lambda row: row["x_tpot"]),
    ("ITL p50/p99 ms", 16, lambda row: serving.p50_p99(row["itl_ms"])),
]
POISSON_COLUMNS = [
    *serving.COLUMNS[:3],
    ("tok/s", 9, lambda row: row["total_token_throughput"]),
    *serving.COLUMNS[5:7],
]


def server_column(runs: list[ServerRun]) -> tuple:
    """The runs' labels, as wide as the longest (variants have any name)."""
    width = max(len("server"), *(len(run.label) for run in runs))
    return ("server", width, lambda row: row["server"])


def print_report(
    offline: OfflineRun, runs: list[ServerRun], workload_text: str, client_processes: int
) -> None:
    print(f"\n{workload_text}")
    print(
        f"offline: {offline.seconds} s, {offline.tokens_per_s} tok/s (prompt + output); "
        f"decode step {offline.decode_step_ms} ms at batch {offline.decode_batch} "
        f"(median of {offline.decode_steps} steps); {offline.preemptions} preemptions; "
        f"TTFT p50/p99 {serving.p50_p99(offline.ttft_ms)} ms, "
        f"TPOT p50/p99 {serving.p50_p99(offline.tpot_ms)} ms"
    )
    burst_rows = [
        run.burst | {"server": run.label, "x_offline": run.burst_vs_offline,
                     "x_step": run.tpot_vs_decode_step, "x_tpot": run.tpot_vs_offline}
        for run in runs if run.burst
    ]  # fmt: skip
    print(f"served: requests sent from {client_processes} client process(es)")
    if burst_rows:
        print("served, burst (the offline prompts, all at once):")
        serving.print_table(burst_rows, [server_column(runs), *BURST_COLUMNS])
    poisson_rows = [row | {"server": run.label} for run in runs for row in run.poisson]
    if poisson_rows:
        print("served, Poisson arrivals (fresh prompts per rate):")
        serving.print_table(poisson_rows, [server_column(runs), *POISSON_COLUMNS])
    for run in runs:
        if run.error:
            print(f"{run.label} ({shlex.join([run.checkout, *run.flags])}): {run.error}")


def all_succeeded(runs: list[ServerRun], rows_per_server: int) -> bool:
    rows = [row for run in runs for row in run.rows]
    clean = all(not run.error for run in runs) and all(row["failed"] == 0 for row in rows)
    return clean and len(rows) == rows_per_server * len(runs)


# ----- command line ----------------------------------------------------------------------------


def engine_arg(text: str) -> tuple[str, object]:
    """KEY=VALUE with a JSON value (256, true, 0.8) or a bare word (dummy, bfloat16)."""
    key, sep, raw = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"engine settings are KEY=VALUE: {text}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.replace("-", "_"), value


def variant(text: str) -> tuple[str, list[str]]:
    """NAME=FLAGS: a name for the log file and the tables, `pagoda serve` flags as in a shell."""
    name, sep, flags = text.partition("=")
    if not (sep and re.fullmatch(r"[\w.-]+", name)):
        raise argparse.ArgumentTypeError(f"variants are NAME=FLAGS, NAME of [A-Za-z0-9_.-]: {text}")
    return name, shlex.split(flags)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="anchor-a",
        help="workload sizes and dtype (default: anchor-a, which needs --model)",
    )
    parser.add_argument(
        "--model", type=Path, help="model folder with a tokenizer (no weights: load_format=dummy)"
    )
    parser.add_argument("--num-requests", type=int)
    parser.add_argument("--prompt-len", type=serving.Lengths.parse, help="LOW-HIGH tokens")
    parser.add_argument("--output-len", type=int)
    parser.add_argument(
        "--rates", default="8,16", help="Poisson rates per second, comma-separated; '' for none"
    )
    parser.add_argument(
        "--engine-arg",
        type=engine_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="EngineConfig setting for the offline engine and the servers",
    )
    parser.add_argument(
        "--variant",
        type=variant,
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help="also serve this checkout with these extra `pagoda serve` flags, labelled NAME",
    )
    parser.add_argument("--before", type=Path, help="also serve from this (older) checkout")
    parser.add_argument(
        "--client-processes",
        type=serving.positive_int,
        default=DEFAULT_CLIENT_PROCESSES,
        help=f"processes that send the requests (default {DEFAULT_CLIENT_PROCESSES})",
    )
    parser.add_argument(
        "--start-timeout", type=float, default=300.0, help="seconds for a server to get ready"
    )
    parser.add_argument("--out-dir", type=Path, help="server logs (default: a new temp folder)")
    parser.add_argument("--json", type=Path, help="write every number to this file")
    args = parser.parse_args(argv)
    args.model = args.model or PRESETS[args.preset].model
    if args.model is None:
        parser.error(f"--preset {args.preset} needs --model DIR (a model folder with a tokenizer)")
    args.rates = [float(rate) for rate in args.rates.split(",") if rate]
    args.engine_args = dict(args.engine_arg)
    args.dtype = args.engine_args.pop("dtype", None)  # the preset's unless given; both sides
    labels = ["after", *(name for name, _ in args.variant), "before"]
    if len(set(labels)) < len(labels):  # each names a log file and rows of the tables
        parser.error(f"variant names must differ from each other and from after/before: {labels}")
    args.out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="served-vs-offline-"))
    return args


def chosen_workload(args: argparse.Namespace) -> throughput.Preset:
    """The preset with the command line's sizes, model and dtype."""
    preset = PRESETS[args.preset]
    prompt_len = args.prompt_len
    return replace(
        preset,
        model=str(Path(args.model).resolve()),
        shape=None,  # the server needs a tokenizer: a model folder, never a bare shape
        num_requests=args.num_requests or preset.num_requests,
        input_len=(prompt_len.low, prompt_len.high) if prompt_len else preset.input_len,
        output_len=args.output_len or preset.output_len,
        dtype=args.dtype or preset.dtype,
    )


def planned_runs(args: argparse.Namespace) -> list[ServerRun]:
    """This checkout, then each variant of it, then --before's: one after the other, so that
    one server at a time holds the device."""
    labelled = [("after", throughput.REPO, [])]
    labelled += [(name, throughput.REPO, flags) for name, flags in args.variant]
    if args.before:
        labelled.append(("before", args.before.resolve(), []))
    return [
        ServerRun(label, str(checkout), str(args.out_dir / f"server-{label}.log"), flags)
        for label, checkout, flags in labelled
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preset = chosen_workload(args)
    model_dir = Path(preset.model)
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    prompts = throughput.make_prompts(preset.num_requests, preset.input_len, vocab)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    workload_text = (
        f"{model_dir.name} ({preset.dtype}) on {device}: {len(prompts)} requests, prompts "
        f"{preset.input_len[0]}-{preset.input_len[1]} tokens ({sum(map(len, prompts))} in all), "
        f"{preset.output_len} outputs each"
    )
    print(workload_text, file=sys.stderr, flush=True)

    offline = run_offline(model_dir, preset, prompts, args.engine_args)
    print(f"offline: {offline.tokens_per_s} tok/s", file=sys.stderr, flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    workload = ServedWorkload(
        burst=prompts,
        output_len=preset.output_len,
        poisson=serving.Workload(
            len(prompts), serving.Lengths(*preset.input_len),
            serving.Lengths(preset.output_len, preset.output_len), (10, vocab - 11), seed=0,
        ),  # the ids of throughput.make_prompts
        rates=args.rates,
        client_processes=args.client_processes,
    )  # fmt: skip
    runs = planned_runs(args)
    for run in runs:
        port = free_port()
        command = serve_command(model_dir, preset.dtype, args.engine_args, port) + run.flags
        url = f"http://127.0.0.1:{port}"
        asyncio.run(run_server(run, command, url, workload, args.start_timeout))
        compare_with_offline(run, offline)

    print_report(offline, runs, workload_text, args.client_processes)
    if args.json:
        everything = {
            "workload": workload_text, "preset": asdict(preset), "engine_args": args.engine_args,
            "client_processes": args.client_processes, "offline": asdict(offline),
            "servers": [asdict(run) for run in runs],
        }  # fmt: skip
        args.json.write_text(json.dumps(everything, indent=2))
    return 0 if all_succeeded(runs, 1 + len(args.rates)) else 1


if __name__ == "__main__":
    # SIGTERM as Ctrl-C: the `finally` that stops the server runs when this process is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
