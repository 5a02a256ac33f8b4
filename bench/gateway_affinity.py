"""The gateway's bench (issue 17): prefix affinity against round-robin on a multi-turn chat over
several `pagoda serve` workers, and the latency the gateway itself adds to a request.

    python bench/gateway_affinity.py --smoke                       # CPU: the shipped stories260K
    python bench/gateway_affinity.py --model /models/qwen3-8b-shape --engine-arg load_format=dummy \
        --engine-arg dtype=bfloat16 --engine-arg gpu_memory_utilization=0.4 \
        --engine-arg num_kv_blocks=2300                                      # GPU

Affinity: W workers, then `pagoda gateway --routing prefix` in front of them; the chat workload;
then W fresh workers (empty prefix caches) behind `--routing round-robin`, the same workload.
The workload: S long system prompts shared by C conversations of T turns; turn k sends the
system prompt, every earlier user message and the reply it got, and a new user message, streamed,
its reply length drawn per turn (equal lengths move conversations in lockstep); a conversation's
next turn starts when its reply has ended; --concurrency conversations run at a
time (a closed loop: both phases at the same concurrency). No `user` field, no x-session-id: only
the prompt's prefix can keep a conversation on a worker. Per phase: TTFT and end-to-end latency,
the prefix-cache hit rate (the workers' vllm:prefix_cache_hits / queries over the phase), and
each worker's share of the requests (the gateway's x-pagoda-backend header).
Before each phase, every worker gets one conversation of the same sizes straight (not counted):
kernels compile for new shapes on a fresh worker, which would fall on the first phase alone.

Overhead: the same streams, about --overhead-streams in flight at a time, sent straight to a
stub worker (bench/stub_worker.py: a fixed pace, so no engine's variance hides the difference) and
through a gateway in front of it; one untimed round per path first, the paths' order alternating,
from the same client processes. Reported: gateway minus direct, TTFT and end-to-end p50 and p99,
each the median over rounds of that round's difference.

Workers on GPUs: --gpus-per-worker 1 gives each its own (CUDA_VISIBLE_DEVICES), 0.5 two per GPU;
auto (the default) spreads them over the visible GPUs. Workers sharing a GPU start one after
another, and the k-th (from 0) gets gpu_memory_utilization (k + 1) x the given share, because a
worker's budget counts the memory of the workers already on the card.
Exit status 0 only if every request succeeded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is no package
import served_vs_offline as served
from pagoda_gateway.proxy import BACKEND_HEADER
from pagoda_worker.models.source import DEFAULT_MODEL

serving = served.serving
ROUTINGS = ("prefix", "round-robin")
SYLLABLES = [c + v for c in "bcdfghklmnprstvwz" for v in "aeiou"]


# ----- the chat workload -----------------------------------------------------------------------


@dataclass
class Sizes:
    """The chat workload's, then the overhead measurement's."""

    system_prompts: int
    system_words: int  # about 1.85 Qwen3 tokens a word, 3.6 of stories260K's
    conversations: int
    turns: int
    user_words: int
    reply_tokens: serving.Lengths  # drawn per turn: replies of one length move in lockstep
    concurrency: int  # conversations at a time
    overhead_streams: int
    overhead_rounds: int  # per path
    overhead_prompt_len: int
    overhead_output_len: int


GPU_SIZES = Sizes(  # run 5 of bench/NOTES.md (with --engine-arg num_kv_blocks=2300)
    system_prompts=8, system_words=1000, conversations=48, turns=6, user_words=120,
    reply_tokens=serving.Lengths(64, 128), concurrency=24,
    overhead_streams=100, overhead_rounds=4, overhead_prompt_len=128, overhead_output_len=64,
)  # fmt: skip
SMOKE_SIZES = Sizes(
    system_prompts=2, system_words=20, conversations=4, turns=3, user_words=4,
    reply_tokens=serving.Lengths(2, 6), concurrency=2,
    overhead_streams=8, overhead_rounds=2, overhead_prompt_len=16, overhead_output_len=8,
)  # fmt: skip


@dataclass
class Conversation:
    system: str
    user_messages: list[str]  # one per turn
    reply_tokens: list[int]  # max_tokens of each turn


def words(rng: random.Random, count: int) -> str:
    """Made-up words: text whose every prompt differs from the first characters on."""
    return " ".join("".join(rng.choices(SYLLABLES, k=rng.randint(1, 3))) for _ in range(count))


def make_conversations(sizes: Sizes, seed: int) -> list[Conversation]:
    rng = random.Random(seed)
    systems = [words(rng, sizes.system_words) for _ in range(sizes.system_prompts)]
    return [
        Conversation(
            systems[number % len(systems)],
            [words(rng, sizes.user_words) for _ in range(sizes.turns)],
            [sizes.reply_tokens.draw(rng) for _ in range(sizes.turns)],
        )
        for number in range(sizes.conversations)
    ]


@dataclass
class Turn:
    result: serving.Result
    reply: str = ""
    backend: str = ""  # the worker that served it, as the gateway names it


async def chat_turn(
    session: aiohttp.ClientSession, url: str, model: str, messages: list[dict], max_tokens: int
) -> Turn:
    """One streamed chat completion: its latencies (as serving.one_request's), reply and worker."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens}
    streamed = await serving.stream(
        session, url + "/v1/chat/completions", body, serving.CHAT_CHUNK_DECODER
    )
    return Turn(streamed.result, streamed.text, streamed.headers.get(BACKEND_HEADER, ""))


async def converse(
    session: aiohttp.ClientSession, url: str, model: str, conversation: Conversation
) -> list[Turn]:
    """Each turn sends the whole conversation so far, once the previous reply has ended."""
    messages = [{"role": "system", "content": conversation.system}]
    turns = []
    for text, max_tokens in zip(conversation.user_messages, conversation.reply_tokens, strict=True):
        messages.append({"role": "user", "content": text})
        turn = await chat_turn(session, url, model, messages, max_tokens)
        turns.append(turn)
        if not turn.result.ok:
            break  # the conversation cannot go on without its reply
        messages.append({"role": "assistant", "content": turn.reply})
    return turns


async def run_conversations(
    url: str, model: str, conversations: list[Conversation], sizes: Sizes
) -> tuple[list[Turn], float]:
    """The conversations, `sizes.concurrency` at a time; every turn and the seconds it took."""
    waiting = iter(conversations)
    turns: list[Turn] = []
    timeout = aiohttp.ClientTimeout(total=served.REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def lane() -> None:
            for conversation in waiting:
                turns.extend(await converse(session, url, model, conversation))

        start = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(sizes.concurrency)))
        return turns, time.perf_counter() - start


# ----- workers and gateways --------------------------------------------------------------------


@dataclass
class WorkerSlot:
    gpu: str | None  # its CUDA_VISIBLE_DEVICES; None on CPU
    rank: int  # workers before it on that GPU: they start first
    gpu_memory_utilization: float | None = None


def place_workers(
    workers: int, gpus_per_worker: float | None, visible: list[str], share: float | None
) -> list[WorkerSlot]:
    """Which GPU each worker gets (gpus_per_worker None: spread over `visible`); `share` is
    one worker's fraction of a card (default: 0.9 split between the workers on it)."""
    if not visible:
        return [WorkerSlot(None, 0) for _ in range(workers)]
    if gpus_per_worker is None:
        per_gpu = math.ceil(workers / len(visible))
    else:
        per_gpu = round(1 / gpus_per_worker)
    if math.ceil(workers / per_gpu) > len(visible):
        raise ValueError(
            f"{workers} workers at {per_gpu} per GPU need more than the {len(visible)} visible"
        )
    share = share or 0.9 / per_gpu
    return [
        WorkerSlot(visible[i // per_gpu], i % per_gpu, round((i % per_gpu + 1) * share, 4))
        for i in range(workers)
    ]


def visible_gpus() -> list[str]:
    if not served.torch.cuda.is_available():
        return []
    if listed := os.environ.get("CUDA_VISIBLE_DEVICES"):
        return listed.split(",")[: served.torch.cuda.device_count()]
    return [str(i) for i in range(served.torch.cuda.device_count())]


@dataclass
class Launched:
    url: str
    process: subprocess.Popen
    log: Path


def launch(command: list[str], port: int, log: Path) -> Launched:
    process = served.start_server(command, served.throughput.REPO, log)
    return Launched(f"http://127.0.0.1:{port}", process, log)


def start_worker(args: argparse.Namespace, slot: WorkerSlot, log: Path) -> Launched:
    engine_args = dict(args.engine_args)
    if slot.gpu_memory_utilization is not None:
        engine_args["gpu_memory_utilization"] = slot.gpu_memory_utilization
    port = served.free_port()
    command = served.serve_command(args.model, args.dtype, engine_args, port)
    if slot.gpu:
        command = ["env", f"CUDA_VISIBLE_DEVICES={slot.gpu}", *command]
    return launch(command, port, log)


async def start_workers(
    args: argparse.Namespace, label: str, started: list[Launched]
) -> list[Launched]:
    """The workers, each rank once the ranks before it on their GPUs are ready."""
    workers = []
    for rank in sorted({slot.rank for slot in args.slots}):
        batch = [
            start_worker(args, slot, args.out_dir / f"{label}-worker{i}.log")
            for i, slot in enumerate(args.slots)
            if slot.rank == rank
        ]
        started += batch
        workers += batch
        await asyncio.gather(*(ready(w, args.start_timeout) for w in batch))
    return workers


async def start_gateway(
    args: argparse.Namespace, label: str, routing: str, backends: list[Launched], started: list
) -> Launched:
    port = served.free_port()
    command = [sys.executable, "-m", "pagoda.cli", "gateway", "--port", str(port),
               "--routing", routing]  # fmt: skip
    for backend in backends:
        command += ["--backend", backend.url]
    gateway = launch(command, port, args.out_dir / f"{label}-gateway.log")
    started.append(gateway)
    await ready(gateway, args.start_timeout)
    return gateway


async def ready(launched: Launched, timeout_s: float) -> None:
    await served.wait_ready(launched.process, launched.url, timeout_s, launched.log)


def stop_all(started: list[Launched]) -> None:
    for launched in reversed(started):  # gateways before their workers
        served.stop_server(launched.process)
    started.clear()


async def prefix_cache_counts(workers: list[Launched]) -> tuple[float, float]:
    """(queries, hits) in prompt tokens, summed over the workers' /metrics."""
    queries = hits = 0.0
    async with aiohttp.ClientSession() as session:
        for worker in workers:
            async with session.get(worker.url + "/metrics") as response:
                text = await response.text()
            for family in text_string_to_metric_families(text):
                total = sum(s.value for s in family.samples if not s.name.endswith("_created"))
                if family.name == "vllm:prefix_cache_queries":
                    queries += total
                elif family.name == "vllm:prefix_cache_hits":
                    hits += total
    return queries, hits


# ----- the phases ------------------------------------------------------------------------------


@dataclass
class Phase:
    routing: str
    workers: str = "fresh"  # every phase starts on new workers: empty prefix caches
    summary: dict = field(default_factory=dict)  # serving.summarize's row
    prefix_cache_queries: float = 0.0
    prefix_cache_hits: float = 0.0
    hit_rate: float | None = None
    shares: dict[str, float] = field(default_factory=dict)  # worker name: share of requests
    mean_prompt_tokens: float = 0.0


def share_by_worker(turns: list[Turn]) -> dict[str, float]:
    counts = Counter(turn.backend for turn in turns if turn.backend)
    total = sum(counts.values())
    return {name: round(count / total, 4) for name, count in sorted(counts.items())}


async def warm_up(workers: list[Launched], model: str, args: argparse.Namespace) -> None:
    """One conversation of the workload's sizes on each worker, straight, on prompts of its own."""
    sizes = replace(args.sizes, conversations=1, concurrency=1)
    for number, worker in enumerate(workers):
        [conversation] = make_conversations(sizes, seed=args.seed + 1000 + number)
        turns, _ = await run_conversations(worker.url, model, [conversation], sizes)
        if not all(turn.result.ok for turn in turns):
            raise served.ServerFailed(f"warm-up on {worker.url} failed: {turns[-1].result.error}")


async def run_phase(args: argparse.Namespace, routing: str, started: list) -> Phase:
    """Fresh workers behind a gateway of `routing`, the chat workload (the workers stay running
    until the next phase stops them)."""
    print(f"{routing}: starting {len(args.slots)} workers", file=sys.stderr, flush=True)
    workers = await start_workers(args, routing, started)
    model = await serving.served_model(workers[0].url)
    await warm_up(workers, model, args)
    gateway = await start_gateway(args, routing, routing, workers, started)
    before = await prefix_cache_counts(workers)
    print(f"{routing}: {args.sizes.conversations} conversations", file=sys.stderr, flush=True)
    conversations = make_conversations(args.sizes, args.seed)
    turns, seconds = await run_conversations(gateway.url, model, conversations, args.sizes)
    after = await prefix_cache_counts(workers)
    served.stop_server(gateway.process)
    started.remove(gateway)
    queries, hits = after[0] - before[0], after[1] - before[1]
    prompts = [turn.result.prompt_tokens for turn in turns if turn.result.ok]
    phase = Phase(
        routing=routing,
        summary=serving.summarize(routing, [turn.result for turn in turns], seconds),
        prefix_cache_queries=queries,
        prefix_cache_hits=hits,
        hit_rate=round(hits / queries, 4) if queries else None,
        shares=share_by_worker(turns),
        mean_prompt_tokens=round(statistics.fmean(prompts), 1) if prompts else 0.0,
    )
    return phase


# ----- gateway overhead ------------------------------------------------------------------------


@dataclass
class Overhead:
    rounds: list[dict] = field(default_factory=list)  # {"direct": row, "gateway": row}
    added_ms: dict[str, float] = field(default_factory=dict)  # median over rounds


ADDED = [
    ("ttft_p50", "ttft_ms", "p50"),
    ("ttft_p99", "ttft_ms", "p99"),
    ("e2e_p50", "e2e_ms", "p50"),
    ("e2e_p99", "e2e_ms", "p99"),
]


def added_latency(rounds: list[dict]) -> dict[str, float]:
    """Per measure: the median over rounds of gateway minus direct."""
    return {
        name: round(
            statistics.median(r["gateway"][kind][cut] - r["direct"][kind][cut] for r in rounds), 3
        )
        for name, kind, cut in ADDED
    }


STUB = Path(__file__).resolve().parent / "stub_worker.py"
STUB_TTFT_MS = 20.0
STUB_ITL_MS = 10.0
REQUESTS_PER_STREAM = 5  # per round and path: each of the streams' slots is used this often


def overhead_arrivals(sizes: Sizes, seed: int) -> list[serving.Arrival]:
    """Evenly spaced arrivals that keep about `overhead_streams` streams in flight against the
    stub (each takes its TTFT plus one ITL per further token)."""
    lasts_s = (STUB_TTFT_MS + (sizes.overhead_output_len - 1) * STUB_ITL_MS) / 1e3
    rate = sizes.overhead_streams / lasts_s
    rng = random.Random(seed)
    return [
        serving.Arrival(
            i / rate,
            [rng.randint(10, 1000) for _ in range(sizes.overhead_prompt_len)],
            sizes.overhead_output_len,
        )
        for i in range(sizes.overhead_streams * REQUESTS_PER_STREAM)
    ]


async def measure_overhead(args: argparse.Namespace, started: list) -> Overhead:
    """The same streams straight to a stub worker and through a gateway in front of it: the
    stub's fixed pace leaves the gateway's own cost as the difference."""
    port = served.free_port()
    command = [sys.executable, str(STUB), "--port", str(port),
               "--ttft-ms", str(STUB_TTFT_MS), "--itl-ms", str(STUB_ITL_MS)]  # fmt: skip
    stub = launch(command, port, args.out_dir / "overhead-stub.log")
    started.append(stub)
    await ready(stub, args.start_timeout)
    gateway = await start_gateway(args, "overhead", "prefix", [stub], started)
    arrivals = overhead_arrivals(args.sizes, args.seed)
    paths = {"direct": stub.url, "gateway": gateway.url}
    overhead = Overhead()

    async def send(path: str) -> dict:
        sent = await serving.send(
            paths[path], "stub", arrivals, served.REQUEST_TIMEOUT_S, args.client_processes
        )
        return serving.summarize(path, *sent)

    for path in paths:  # untimed: connections opened, code paths warm
        await send(path)
    for number in range(args.sizes.overhead_rounds):
        order = list(paths) if number % 2 == 0 else list(reversed(paths))
        print(f"overhead: round {number + 1} ({' then '.join(order)})", file=sys.stderr)
        overhead.rounds.append({path: await send(path) for path in order})
    clean = [r for r in overhead.rounds if all(row["failed"] == 0 for row in r.values())]
    if clean:
        overhead.added_ms = added_latency(clean)
    return overhead


# ----- report ----------------------------------------------------------------------------------

PHASE_COLUMNS = [  # (heading, width, cell) as in serving.print_table
    ("phase", 11, lambda row: row["rate"]),
    ("requests", 8, lambda row: row["completed"]),
    ("fail", 4, lambda row: row["failed"]),
    ("TTFT p50/p99 ms", 17, lambda row: serving.p50_p99(row["ttft_ms"])),
    ("E2E p50 ms", 10, lambda row: row["e2e_ms"].get("p50", "-")),
    ("hit rate", 8, lambda row: row["hit_rate"]),
    ("prompt tok", 10, lambda row: row["mean_prompt_tokens"]),
    ("worker shares", 13, lambda row: " ".join(f"{s:.2f}" for s in row["shares"].values())),
]


def ttft_ratio(phases: list[Phase]) -> float | None:
    """Round-robin's TTFT p50 over prefix's: how much affinity saves."""
    p50 = {phase.routing: phase.summary["ttft_ms"].get("p50") for phase in phases}
    if p50.get("prefix") and p50.get("round-robin"):
        return round(p50["round-robin"] / p50["prefix"], 2)
    return None


def print_phases(args: argparse.Namespace, phases: list[Phase]) -> None:
    s = args.sizes
    print(f"\n{args.workload_text}")
    print(
        f"chat: {s.system_prompts} system prompts of {s.system_words} words, "
        f"{s.conversations} conversations x {s.turns} turns of {s.user_words} words, replies "
        f"of {s.reply_tokens.low}-{s.reply_tokens.high} tokens, {s.concurrency} conversations "
        f"at a time; each phase on fresh workers (prefix caches empty)"
    )
    extra = ("hit_rate", "shares", "mean_prompt_tokens")
    rows = [phase.summary | {name: getattr(phase, name) for name in extra} for phase in phases]
    serving.print_table(rows, PHASE_COLUMNS)
    if (ratio := ttft_ratio(phases)) is not None:
        print(f"TTFT p50 round-robin / prefix: {ratio}x (goal >= 2)")


def print_overhead(args: argparse.Namespace, overhead: Overhead) -> None:
    s = args.sizes
    print(
        f"\ngateway overhead: about {s.overhead_streams} streams in flight "
        f"({REQUESTS_PER_STREAM * s.overhead_streams} requests of {s.overhead_prompt_len} prompt + "
        f"{s.overhead_output_len} output tokens per round and path) against a stub worker "
        f"(first chunk after {STUB_TTFT_MS:g} ms, then one every {STUB_ITL_MS:g} ms), "
        f"{s.overhead_rounds} rounds per path, {args.client_processes} client process(es)"
    )
    for number, round_ in enumerate(overhead.rounds, start=1):
        cells = [
            f"{path} TTFT p50/p99 {serving.p50_p99(row['ttft_ms'])} E2E p50/p99 "
            f"{serving.p50_p99(row['e2e_ms'])}"
            for path, row in round_.items()
        ]
        print(f"  round {number}: " + "; ".join(cells))
    if added := overhead.added_ms:
        print(
            f"added by the gateway (ms, median over rounds): TTFT p50 {added['ttft_p50']}, "
            f"p99 {added['ttft_p99']}; E2E p50 {added['e2e_p50']}, p99 {added['e2e_p99']} "
            f"(goal < 1 ms p50)"
        )


def all_succeeded(phases: list[Phase], overhead: Overhead) -> bool:
    rows = [phase.summary for phase in phases]
    rows += [row for r in overhead.rounds for row in r.values()]
    return all(row["failed"] == 0 and row["completed"] > 0 for row in rows)


# ----- command line ----------------------------------------------------------------------------


def gpus_per_worker(text: str) -> float | None:
    """auto (None), 1, or 1/N for N workers on a GPU."""
    if text == "auto":
        return None
    value = float(text)
    if not (0 < value <= 1 and abs(1 / value - round(1 / value)) < 1e-6):
        raise argparse.ArgumentTypeError(f"auto, 1, or 1/N (0.5, 0.25): {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        type=Path,
        default=DEFAULT_MODEL,
        help="model folder (default: the shipped stories260K)",
    )
    parser.add_argument(
        "--engine-arg",
        type=served.engine_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="EngineConfig setting for every worker",
    )
    parser.add_argument("--workers", type=int, default=2, help="workers per phase (2 or more)")
    parser.add_argument(
        "--gpus-per-worker",
        type=gpus_per_worker,
        default=None,
        help="auto, 1 (a GPU each) or 1/N (N workers on a GPU)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CPU")
    sizes = parser.add_argument_group("sizes (default: the GPU's, or --smoke's)")
    for name in Sizes.__dataclass_fields__:
        kind = serving.Lengths.parse if name == "reply_tokens" else serving.positive_int
        sizes.add_argument(f"--{name.replace('_', '-')}", type=kind)
    parser.add_argument(
        "--routings",
        default=",".join(ROUTINGS),
        help="phases in this order (default: prefix,round-robin)",
    )
    parser.add_argument(
        "--client-processes",
        type=serving.positive_int,
        default=served.DEFAULT_CLIENT_PROCESSES,
        help="processes that send the overhead's streams",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=300.0,
        help="seconds for a worker or gateway to get ready",
    )
    parser.add_argument("--out-dir", type=Path, help="logs (default: a new temp folder)")
    parser.add_argument("--json", type=Path, help="write every number to this file")
    args = parser.parse_args(argv)
    if args.workers < 2:
        parser.error("--workers must be 2 or more: affinity needs a choice")
    args.routings = args.routings.split(",")
    if not set(args.routings) <= set(ROUTINGS):
        parser.error(f"--routings takes {', '.join(ROUTINGS)}")
    base = SMOKE_SIZES if args.smoke else GPU_SIZES
    given = {name: getattr(args, name) for name in Sizes.__dataclass_fields__}
    args.sizes = replace(base, **{k: v for k, v in given.items() if v is not None})
    args.engine_args = dict(args.engine_arg)
    args.dtype = args.engine_args.pop("dtype", "auto")
    args.model = args.model.resolve()
    share = args.engine_args.pop("gpu_memory_utilization", None)  # one worker's
    try:
        args.slots = place_workers(args.workers, args.gpus_per_worker, visible_gpus(), share)
    except ValueError as e:
        parser.error(str(e))
    args.out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="gateway-affinity-"))
    return args


async def run(args: argparse.Namespace) -> tuple[list[Phase], Overhead]:
    started: list[Launched] = []
    phases = []
    try:
        for routing in args.routings:
            stop_all(started)  # the previous phase's workers: each phase gets fresh ones
            phases.append(await run_phase(args, routing, started))
        stop_all(started)
        print("overhead: a stub worker, straight and through a gateway", file=sys.stderr)
        overhead = await measure_overhead(args, started)
    finally:
        stop_all(started)
    return phases, overhead


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    device = served.torch.cuda.get_device_name() if args.slots[0].gpu else "CPU"
    placement = ", ".join(
        f"GPU {s.gpu} (utilization {s.gpu_memory_utilization})" if s.gpu else "CPU"
        for s in args.slots
    )
    args.workload_text = f"{args.model.name} ({args.dtype}) on {device}; workers: {placement}"
    print(f"{args.workload_text}; logs in {args.out_dir}", file=sys.stderr, flush=True)
    try:
        phases, overhead = asyncio.run(run(args))
    except served.ServerFailed as e:
        print(f"failed: {e}", file=sys.stderr)
        return 1
    print_phases(args, phases)
    print_overhead(args, overhead)
    if args.json:
        everything = {
            "workload": args.workload_text,
            "sizes": asdict(args.sizes),
            "engine_args": args.engine_args,
            "workers": [asdict(s) for s in args.slots],
            "phases": [asdict(phase) for phase in phases],
            "ttft_p50_ratio": ttft_ratio(phases),
            "overhead": asdict(overhead),
        }
        args.json.write_text(json.dumps(everything, indent=2))
    return 0 if all_succeeded(phases, overhead) else 1


if __name__ == "__main__":
    # SIGTERM as Ctrl-C: the `finally` that stops the servers runs when this process is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
