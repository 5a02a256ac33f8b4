"""A stand-in worker for timing the gateway alone: it streams completions at a fixed pace (first
chunk after --ttft-ms, then one chunk every --itl-ms), so the difference between sending to it
straight and through a gateway is the gateway's own cost, free of a real engine's variance.

    python bench/stub_worker.py --port 8001 --ttft-ms 20 --itl-ms 10

It answers what the gateway and the bench clients ask: streamed POST /v1/completions (with its
usage chunk), GET /v1/models, /ready and /metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web

MODEL = "stub"


def chunk(text: str, finish: str | None = None) -> bytes:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    body = {"id": "cmpl-stub", "object": "text_completion", "model": MODEL, "choices": [choice]}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def build_app(ttft_s: float, itl_s: float) -> web.Application:
    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        tokens = int(body.get("max_tokens") or 16)
        prompt = body.get("prompt") or []
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await asyncio.sleep(ttft_s)
        for i in range(tokens):
            if i:
                await asyncio.sleep(itl_s)
            await response.write(chunk(" x", "length" if i == tokens - 1 else None))
        usage = {"prompt_tokens": len(prompt), "completion_tokens": tokens}
        if (body.get("stream_options") or {}).get("include_usage"):
            tail = {"id": "cmpl-stub", "model": MODEL, "choices": [], "usage": usage}
            await response.write(b"data: " + json.dumps(tail).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text="vllm:num_requests_waiting 0\n")

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/ready", ready)
    app.router.add_get("/health", ready)
    app.router.add_get("/metrics", metrics)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ttft-ms", type=float, default=20.0)
    parser.add_argument("--itl-ms", type=float, default=10.0)
    args = parser.parse_args()
    app = build_app(args.ttft_ms / 1e3, args.itl_ms / 1e3)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
