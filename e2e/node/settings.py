"""What the launcher (on the host) hands to the tests (inside the namespaces): one JSON value
in the environment."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from pydantic import BaseModel

from e2e.build import cache_root

ENV = "PAGODA_E2E_NODE"


class Image(BaseModel):
    archive: str
    """An OCI archive on disk."""
    digest: str
    """The manifest's digest: how the imported image is found to be tagged."""
    reference: str
    """The name pods use, as the CRI spells it (docker.io/library/... for a short name)."""


class RunSettings(BaseModel):
    bin_dir: str
    workdir: str
    containerd_root: str
    """Kept between runs (images stay imported), one per containerd version."""
    images: dict[str, Image]
    """"pause" (the pod sandbox) and "worker" (`pagoda serve`)."""


def node_cache() -> Path:
    return cache_root() / "node"


def containerd_root() -> Path:
    version = subprocess.run(
        ["containerd", "--version"], capture_output=True, text=True, check=True
    ).stdout
    return node_cache() / f"containerd-{hashlib.sha256(version.encode()).hexdigest()[:12]}"


def current() -> RunSettings | None:
    """The settings of this run, or None outside `make e2e-node`."""
    raw = os.environ.get(ENV)
    return RunSettings.model_validate_json(raw) if raw else None
