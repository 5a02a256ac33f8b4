"""Plain HTTP to the gateway and the workers, for what the openai client hides (status, headers,
raw SSE, metrics)."""

from __future__ import annotations

import http.client
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
BACKEND = "x-pagoda-backend"


def scrape(url: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0 when absent)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        metric, _, value = line.rpartition(" ")
        head, _, rest = metric.partition("{")
        if head == name and ",".join(sorted(rest.rstrip("}").split(","))) == wanted:
            return float(value)
        if head == name and not labels and not rest:
            return float(value)
    return 0.0


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self):
        return json.loads(self.body)


def _connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)


def _headers(key: str | None, extra: dict[str, str] | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"} | (extra or {})
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def post(url: str, path: str, body: dict, key: str | None = None, headers=None) -> Reply:
    connection = _connection(url)
    try:
        connection.request("POST", path, json.dumps(body), _headers(key, headers))
        response = connection.getresponse()
        found = {k.lower(): v for k, v in response.getheaders()}
        return Reply(response.status, found, response.read())
    finally:
        connection.close()


class Stream:
    """A streamed request whose events are read one at a time; `close()` hangs up."""

    def __init__(self, url: str, path: str, body: dict, key: str | None = None, headers=None):
        self.connection = _connection(url)
        body = body | {"stream": True}
        self.connection.request("POST", path, json.dumps(body), _headers(key, headers))
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.headers = {k.lower(): v for k, v in self.response.getheaders()}

    def events(self) -> Iterator[bytes]:
        """Each event's data: b'[DONE]' or the JSON bytes."""
        for line in self.response:
            if line.startswith(b"data: "):
                yield line[len(b"data: ") :].rstrip(b"\n")

    def close(self) -> None:
        self.connection.close()


def collect(stream: Stream) -> list[bytes]:
    try:
        return list(stream.events())
    finally:
        stream.close()
