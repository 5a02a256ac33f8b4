"""A Hugging Face Hub stand-in that serves one folder as every model it knows, speaking just
enough of the Hub's HTTP API for `huggingface_hub.snapshot_download` and `hf download`.

Tests use `fake_hub()` (on 127.0.0.1); the real-node tier runs this file in a pod:
`python fake_hub.py FOLDER PORT REPO...`."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _app(folder: Path, repos: set[str]) -> web.Application:
    files = sorted(p for p in folder.iterdir() if p.is_file())

    def known(request: web.Request) -> str:
        repo = f"{request.match_info['org']}/{request.match_info['name']}"
        if repo not in repos:
            raise web.HTTPNotFound(headers={"X-Error-Code": "RepoNotFound"})
        return repo

    async def info(request: web.Request) -> web.Response:
        repo = known(request)
        siblings = [{"rfilename": p.name} for p in files]
        return web.json_response({"id": repo, "sha": COMMIT, "siblings": siblings})

    async def tree(request: web.Request) -> web.Response:
        known(request)
        entries = [
            {"type": "file", "path": p.name, "size": p.stat().st_size, "oid": _git_oid(p)}
            for p in files
        ]
        return web.json_response(entries)

    async def resolve(request: web.Request) -> web.Response:
        known(request)
        path = folder / request.match_info["file"]
        if not path.is_file():
            raise web.HTTPNotFound(headers={"X-Error-Code": "EntryNotFound"})
        body = path.read_bytes()
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(body).hexdigest()}"'}
        if request.method == "HEAD":
            return web.Response(headers=headers | {"Content-Length": str(len(body))})
        return web.Response(body=body, headers=headers)

    app = web.Application()
    app.router.add_get("/api/models/{org}/{name}/revision/{rev}", info)
    app.router.add_get("/api/models/{org}/{name}/tree/{rev}", tree)
    app.router.add_route("*", "/{org}/{name}/resolve/{rev}/{file}", resolve)
    return app


def _git_oid(path: Path) -> str:
    body = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()


@contextmanager
def fake_hub(folder: Path, repos: set[str]) -> Iterator[str]:
    """Serve `folder` as each of `repos`; yields the endpoint URL (for HF_ENDPOINT)."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_app(folder, repos))
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    host, port = runner.addresses[0][:2]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


if __name__ == "__main__":
    import sys

    folder, port, *known = sys.argv[1:]
    web.run_app(_app(Path(folder), set(known)), host="0.0.0.0", port=int(port))
