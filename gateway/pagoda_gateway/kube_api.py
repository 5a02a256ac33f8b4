"""Just enough of the Kubernetes API for the gateway: one GET, one watch, with the pod's
ServiceAccount (its token file is read again for every call: kubelet rotates it)."""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
WATCH_TIMEOUT_S = 300
MAX_EVENT_BYTES = 16 * 2**20


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class KubeApi:
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        token_file: Path | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.token_file = token_file
        self.ssl = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None

    @classmethod
    def in_cluster(cls, session: aiohttp.ClientSession) -> KubeApi:
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise RuntimeError(
                "--discover needs to run in a Kubernetes pod (KUBERNETES_SERVICE_HOST is unset);"
                " outside a cluster, list the workers with --backend"
            )
        host = f"[{host}]" if ":" in host else host
        return cls(
            f"https://{host}:{port}",
            session,
            SERVICE_ACCOUNT / "token",
            SERVICE_ACCOUNT / "ca.crt",
        )

    def _headers(self) -> dict[str, str]:
        if self.token_file is None:
            return {}
        return {"Authorization": "Bearer " + self.token_file.read_text().strip()}

    async def get(self, path: str, **params: str) -> dict:
        async with self.session.get(
            self.base_url + path, params=params, headers=self._headers(), ssl=self.ssl or True
        ) as response:
            response.raise_for_status()
            return await response.json()

    async def watch(
        self, path: str, resource_version: str, label_selector: str
    ) -> AsyncIterator[tuple[str, dict]]:
        """(type, object) per event until the server ends the watch."""
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "labelSelector": label_selector,
            "timeoutSeconds": str(WATCH_TIMEOUT_S),
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_read=WATCH_TIMEOUT_S + 30)
        async with self.session.get(
            self.base_url + path,
            params=params,
            headers=self._headers(),
            ssl=self.ssl or True,
            timeout=timeout,
        ) as response:
            if response.status == 410:
                raise WatchExpired
            response.raise_for_status()
            while line := await response.content.readuntil(b"\n", max_size=MAX_EVENT_BYTES):
                if not line.strip():
                    continue
                event = json.loads(line)
                if event["type"] == "ERROR":
                    if event["object"].get("code") == 410:
                        raise WatchExpired
                    raise aiohttp.ClientError(f"watch error: {event['object'].get('message')}")
                yield event["type"], event["object"]
