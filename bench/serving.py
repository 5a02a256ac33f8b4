"""Open-loop serving benchmark for an OpenAI-compatible server (Pagoda, vLLM, ...).

Requests arrive as a Poisson process at each given rate, whether or not earlier ones have
finished (open loop: a slow server builds a queue, as with real traffic). Prompt and output
lengths are drawn per request; prompts are random token ids so their lengths are exact, and
`ignore_eos` makes each output as long as drawn. Reports TTFT, TPOT, ITL and end-to-end
latency percentiles and throughput per rate.

    python bench/serving.py --url http://127.0.0.1:8000 --rates 2,8,32 --num-requests 200 \
        --prompt-len 16-128 --output-len 32-128

One Python process parsing thousands of chunks a second falls behind and reads them in clumps,
which shows as ITL that is the client's, not the server's: --client-processes P spreads the
requests round-robin over P client processes (this script, run as children), all aimed at one
shared start instant.

Only loopback URLs unless --allow-remote: a benchmark is a load test, aim it deliberately.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
import msgspec
from multidict import CIMultiDict

SCRIPT = Path(__file__).resolve()
CLIENT_FLAG = "--client-share"  # runs this script as one client process of send()
START_MARGIN_S = 0.1  # from choosing the start instant to every client process knowing it


@dataclass
class Lengths:
    """A fixed length ("64") or a uniform range ("16-128")."""

    low: int
    high: int

    @classmethod
    def parse(cls, text: str) -> Lengths:
        low, _, high = text.partition("-")
        lengths = cls(int(low), int(high or low))
        if not 1 <= lengths.low <= lengths.high:
            raise argparse.ArgumentTypeError(
                f"lengths must be N or LOW-HIGH with 1 <= LOW <= HIGH: {text}"
            )
        return lengths

    def draw(self, rng: random.Random) -> int:
        return rng.randint(self.low, self.high)


@dataclass
class Result:
    ok: bool
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft_s: float = 0.0
    e2e_s: float = 0.0
    itl_s: list[float] = field(default_factory=list)
    error: str = ""

    @property
    def tpot_s(self) -> float | None:
        if self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


# What the client reads of a streamed chunk; msgspec Structs, the cheapest to decode into,
# skip every other field without building it.
class ChunkChoice(msgspec.Struct):
    text: str = ""


class ChunkUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int


class ChunkError(msgspec.Struct):
    message: str


class Chunk(msgspec.Struct):
    choices: list[ChunkChoice] = []
    usage: ChunkUsage | None = None
    error: ChunkError | None = None


class ChatDelta(msgspec.Struct):
    content: str | None = None


class ChatChoice(msgspec.Struct):
    delta: ChatDelta = msgspec.field(default_factory=ChatDelta)

    @property
    def text(self) -> str:
        return self.delta.content or ""


class ChatChunk(msgspec.Struct):
    choices: list[ChatChoice] = []
    usage: ChunkUsage | None = None
    error: ChunkError | None = None


CHUNK_DECODER = msgspec.json.Decoder(Chunk)
CHAT_CHUNK_DECODER = msgspec.json.Decoder(ChatChunk)


async def sse_data(content: aiohttp.StreamReader) -> AsyncIterator[tuple[float, bytes]]:
    """Each SSE data payload but [DONE], with the time its bytes arrived: one clock read per
    network read, so the chunks that came in together share it, however long parsing takes."""
    pending = b""
    async for data in content.iter_any():
        now = time.perf_counter()
        *lines, pending = (pending + data).split(b"\n")
        for line in lines:
            if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
                yield now, line[6:]


@dataclass
class Streamed:
    result: Result
    text: str = ""  # the first choice's, whole
    headers: CIMultiDict = field(default_factory=CIMultiDict)  # names in any case


async def stream(
    session: aiohttp.ClientSession, url: str, body: dict, decoder: msgspec.json.Decoder
) -> Streamed:
    """POST `body` streamed to `url`, greedy and as long as max_tokens, decoding each chunk with
    `decoder` (completion or chat chunks); the latencies, the text and the response headers."""
    body = body | {
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    streamed, pieces, last = Streamed(Result(ok=False)), [], None
    result = streamed.result
    try:
        async with session.post(url, json=body) as response:
            streamed.headers = CIMultiDict(response.headers)
            if response.status != 200:
                result.error = f"HTTP {response.status}: {(await response.text())[:200]}"
                return streamed
            async for now, payload in sse_data(response.content):
                chunk = decoder.decode(payload)
                if chunk.error:  # the server gave up mid-stream
                    result.error = chunk.error.message
                    return streamed
                if chunk.usage:
                    result.prompt_tokens = chunk.usage.prompt_tokens
                    result.output_tokens = chunk.usage.completion_tokens
                if not chunk.choices or not (text := chunk.choices[0].text):
                    continue
                pieces.append(text)
                if last is None:
                    result.ttft_s = now - start
                else:
                    result.itl_s.append(now - last)
                last = now
    except (aiohttp.ClientError, TimeoutError) as e:  # --timeout raises a bare TimeoutError
        result.error = repr(e)
        return streamed
    result.e2e_s = time.perf_counter() - start
    result.ok = result.output_tokens > 0
    streamed.text = "".join(pieces)
    return streamed


async def one_request(
    session: aiohttp.ClientSession, url: str, model: str, prompt: list[int], max_tokens: int
) -> Result:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens}
    return (await stream(session, url + "/v1/completions", body, CHUNK_DECODER)).result


@dataclass
class Workload:
    """What to send: request count, length ranges, the range of prompt token ids, a seed."""

    num_requests: int
    prompt_len: Lengths
    output_len: Lengths
    token_ids: tuple[int, int]
    seed: int


@dataclass
class Arrival:
    at_s: float  # seconds after the run's start
    prompt: list[int]
    max_tokens: int


def poisson_arrivals(workload: Workload, rate: float) -> list[Arrival]:
    """Random prompts arriving as a Poisson process of `rate` per second."""
    rng = random.Random(workload.seed)
    at_s, arrivals = 0.0, []
    for _ in range(workload.num_requests):
        at_s += rng.expovariate(rate)
        length = workload.prompt_len.draw(rng)
        prompt = [rng.randint(*workload.token_ids) for _ in range(length)]
        arrivals.append(Arrival(at_s, prompt, workload.output_len.draw(rng)))
    return arrivals


@dataclass
class Share:
    """What one client process sends."""

    url: str
    model: str
    arrivals: list[Arrival]
    timeout_s: float


@dataclass
class Outcome:
    results: list[Result]  # in the order of the share's arrivals
    finished: float  # wall clock (time.time()) as the last request finished


async def send_share(share: Share, start: float) -> Outcome:
    """Send each request at `start` (a wall-clock instant) + its arrival time, whether or not
    earlier ones have finished; wait for all of them."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=share.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # Sleeps on the monotonic clock, aimed at the instant that other processes share.
        origin = time.perf_counter() + start - time.time()
        tasks = []
        for arrival in share.arrivals:
            await asyncio.sleep(max(0.0, origin + arrival.at_s - time.perf_counter()))
            request = one_request(
                session, share.url, share.model, arrival.prompt, arrival.max_tokens
            )
            tasks.append(asyncio.create_task(request))
        results = await asyncio.gather(*tasks)
        return Outcome(list(results), time.time())


async def send(
    url: str, model: str, arrivals: list[Arrival], timeout_s: float, processes: int = 1
) -> tuple[list[Result], float]:
    """Send each request at its arrival time, whether or not earlier ones have finished, from
    this process or round-robin from `processes` client processes; wait for all of them.
    Returns the results in the order of `arrivals` and the run's duration in seconds."""
    if processes == 1:
        start = time.time()
        outcome = await send_share(Share(url, model, arrivals, timeout_s), start)
        return outcome.results, outcome.finished - start
    shares = [Share(url, model, arrivals[k::processes], timeout_s) for k in range(processes)]
    start, outcomes = await send_from_processes(shares)
    results = [outcomes[i % processes].results[i // processes] for i in range(len(arrivals))]
    return results, max(outcome.finished for outcome in outcomes) - start


async def send_from_processes(shares: list[Share]) -> tuple[float, list[Outcome]]:
    """Each share from a client process of its own, all started at one instant once every
    one is ready; returns that instant and their outcomes."""
    children = []
    try:
        for _ in shares:  # all of them first: they start up side by side
            children.append(await spawn_client())
        await asyncio.gather(*map(hand_over, children, shares))
        start = time.time() + START_MARGIN_S
        for child in children:
            child.stdin.write(f"{start!r}\n".encode())
            child.stdin.close()
        return start, await asyncio.gather(*(client_outcome(child) for child in children))
    finally:
        for child in children:
            if child.returncode is None:  # only when this run failed or was cancelled
                child.kill()
                await child.wait()


async def spawn_client() -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), CLIENT_FLAG, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def hand_over(child: asyncio.subprocess.Process, share: Share) -> None:
    """Give a client process its share; returns once it is ready to send it."""
    child.stdin.write(msgspec.json.encode(share) + b"\n")
    await child.stdin.drain()
    if await child.stdout.readline() != b"ready\n":
        raise RuntimeError("a client process failed before it was ready (its stderr above)")


async def client_outcome(child: asyncio.subprocess.Process) -> Outcome:
    output = await child.stdout.read()
    if await child.wait() != 0:
        raise RuntimeError(f"a client process exited with status {child.returncode}")
    return msgspec.json.decode(output, type=Outcome)


def client_process() -> int:
    """One client process of send_from_processes: its share, then the start instant, from
    stdin; its outcome to stdout."""
    share = msgspec.json.decode(sys.stdin.buffer.readline(), type=Share)
    print("ready", flush=True)
    start = float(sys.stdin.buffer.readline())
    outcome = asyncio.run(send_share(share, start))
    sys.stdout.buffer.write(msgspec.json.encode(outcome))
    return 0


async def run_rate(args: argparse.Namespace, rate: float, model: str) -> dict:
    """Send num_requests at Poisson arrivals of `rate` per second; wait for all of them."""
    workload = Workload(
        args.num_requests, args.prompt_len, args.output_len, args.token_ids, args.seed
    )
    arrivals = poisson_arrivals(workload, rate)
    results, duration = await send(args.url, model, arrivals, args.timeout, args.client_processes)
    return summarize(rate, results, duration)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    cuts = (
        statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    )
    return {
        "mean": _ms(statistics.fmean(values)),
        "p50": _ms(cuts[49]),
        "p90": _ms(cuts[89]),
        "p99": _ms(cuts[98]),
    }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def p50_p99(stats: dict[str, float]) -> str:
    return f"{stats.get('p50', '-')}/{stats.get('p99', '-')}"


def summarize(rate: float | str, results: list[Result], duration: float) -> dict:
    done = [r for r in results if r.ok]
    output = sum(r.output_tokens for r in done)
    prompt = sum(r.prompt_tokens for r in done)
    return {
        "rate": rate,
        "completed": len(done),
        "failed": len(results) - len(done),
        "errors": sorted({r.error for r in results if not r.ok})[:3],
        "duration_s": round(duration, 2),
        "request_throughput": round(len(done) / duration, 2),
        "output_token_throughput": round(output / duration, 1),
        "total_token_throughput": round((prompt + output) / duration, 1),
        "ttft_ms": percentiles([r.ttft_s for r in done]),
        "tpot_ms": percentiles([r.tpot_s for r in done if r.tpot_s is not None]),
        "itl_ms": percentiles([gap for r in done for gap in r.itl_s]),
        "e2e_ms": percentiles([r.e2e_s for r in done]),
    }


COLUMNS = [  # (heading, width, cell)
    ("rate/s", 7, lambda row: row["rate"]),
    ("done", 5, lambda row: row["completed"]),
    ("fail", 4, lambda row: row["failed"]),
    ("req/s", 6, lambda row: row["request_throughput"]),
    ("out tok/s", 9, lambda row: row["output_token_throughput"]),
    ("TTFT p50/p99 ms", 16, lambda row: p50_p99(row["ttft_ms"])),
    ("TPOT p50/p99 ms", 16, lambda row: p50_p99(row["tpot_ms"])),
    ("ITL p50/p99 ms", 15, lambda row: p50_p99(row["itl_ms"])),
    ("E2E p50/p99 ms", 17, lambda row: p50_p99(row["e2e_ms"])),
]


def print_table(rows: list[dict], columns: list = COLUMNS) -> None:
    print(" ".join(f"{heading:>{width}}" for heading, width, _ in columns))
    for row in rows:
        print(" ".join(f"{cell(row)!s:>{width}}" for _, width, cell in columns))
        for error in row["errors"]:
            print(f"        error: {error}")


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def served_model(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url + "/v1/models") as response:
        return (await response.json())["data"][0]["id"]


def positive_int(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text}")
    return number


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    parser.add_argument("--model", help="model name (default: the first of /v1/models)")
    parser.add_argument(
        "--rates", default="2,8,32", help="request rates per second, comma-separated"
    )
    parser.add_argument("--num-requests", type=int, default=100, help="requests per rate")
    parser.add_argument("--prompt-len", type=Lengths.parse, default=Lengths(16, 128))
    parser.add_argument("--output-len", type=Lengths.parse, default=Lengths(32, 128))
    parser.add_argument(
        "--token-ids",
        type=Lengths.parse,
        default=Lengths(3, 500),
        help="range of the random prompt token ids (inside the vocabulary)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    parser.add_argument(
        "--client-processes",
        type=positive_int,
        default=1,
        help="processes that send the requests, round-robin (one falls behind at high rates)",
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback URL")
    args = parser.parse_args(argv)
    args.url = args.url.rstrip("/")
    args.rates = [float(r) for r in args.rates.split(",")]
    args.token_ids = (args.token_ids.low, args.token_ids.high)
    if not (args.allow_remote or is_loopback(args.url)):
        parser.error(f"{args.url} is not a loopback address; pass --allow-remote to load it")
    return args


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = args.model or await served_model(args.url)
    rows = []
    for rate in args.rates:
        rows.append(await run_rate(args, rate, model))
        print(
            f"rate {rate}/s: {rows[-1]['completed']} done in {rows[-1]['duration_s']} s",
            file=sys.stderr,
        )
    print(f"model {model} at {args.url}; {args.num_requests} requests per rate, prompts "
          f"{args.prompt_len.low}-{args.prompt_len.high} tokens, outputs "
          f"{args.output_len.low}-{args.output_len.high} tokens; "
          f"{args.client_processes} client process(es)")  # fmt: skip
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"model": model, "url": args.url, "args": _jsonable(args), "results": rows},
                f,
                indent=2,
            )
    return 0 if all(row["failed"] == 0 for row in rows) else 1


def _jsonable(args: argparse.Namespace) -> dict:
    return {k: asdict(v) if isinstance(v, Lengths) else v for k, v in vars(args).items()}


if __name__ == "__main__":
    sys.exit(client_process() if sys.argv[1:] == [CLIENT_FLAG] else asyncio.run(main()))
