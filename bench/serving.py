"""Open-loop serving benchmark for an OpenAI-compatible server (Pagoda, vLLM, ...).

Requests arrive as a Poisson process at each given rate, whether or not earlier ones have
finished (open loop: a slow server builds a queue, as with real traffic). Prompt and output
lengths are drawn per request; prompts are random token ids so their lengths are exact, and
`ignore_eos` makes each output as long as drawn. Reports TTFT, TPOT, ITL and end-to-end
latency percentiles and throughput per rate.

    python bench/serving.py --url http://127.0.0.1:8000 --rates 2,8,32 --num-requests 200 \
        --prompt-len 16-128 --output-len 32-128

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
from dataclasses import asdict, dataclass, field
from urllib.parse import urlparse

import aiohttp


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


async def one_request(
    session: aiohttp.ClientSession, url: str, model: str, prompt: list[int], max_tokens: int
) -> Result:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    result, last = Result(ok=False), None
    try:
        async with session.post(url + "/v1/completions", json=body) as response:
            if response.status != 200:
                result.error = f"HTTP {response.status}: {(await response.text())[:200]}"
                return result
            async for line in response.content:
                if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:  # the server gave up mid-stream
                    result.error = chunk["error"]["message"]
                    return result
                now = time.perf_counter()
                if chunk.get("usage"):
                    result.prompt_tokens = chunk["usage"]["prompt_tokens"]
                    result.output_tokens = chunk["usage"]["completion_tokens"]
                if not chunk.get("choices") or not chunk["choices"][0]["text"]:
                    continue
                if last is None:
                    result.ttft_s = now - start
                else:
                    result.itl_s.append(now - last)
                last = now
    except (aiohttp.ClientError, TimeoutError) as e:  # --timeout raises a bare TimeoutError
        result.error = repr(e)
        return result
    result.e2e_s = time.perf_counter() - start
    result.ok = result.output_tokens > 0
    return result


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


async def send(
    url: str, model: str, arrivals: list[Arrival], timeout_s: float
) -> tuple[list[Result], float]:
    """Send each request at its arrival time, whether or not earlier ones have finished; wait
    for all of them. Returns the results and the run's duration in seconds."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks, start = [], time.perf_counter()
        for arrival in arrivals:
            await asyncio.sleep(max(0.0, start + arrival.at_s - time.perf_counter()))
            request = one_request(session, url, model, arrival.prompt, arrival.max_tokens)
            tasks.append(asyncio.create_task(request))
        results = await asyncio.gather(*tasks)
        duration = time.perf_counter() - start
    return results, duration


async def run_rate(args: argparse.Namespace, rate: float, model: str) -> dict:
    """Send num_requests at Poisson arrivals of `rate` per second; wait for all of them."""
    workload = Workload(
        args.num_requests, args.prompt_len, args.output_len, args.token_ids, args.seed
    )
    results, duration = await send(args.url, model, poisson_arrivals(workload, rate), args.timeout)
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
          f"{args.output_len.low}-{args.output_len.high} tokens")  # fmt: skip
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
    sys.exit(asyncio.run(main()))
