"""Optional API keys: `Authorization: Bearer <key>`, compared in constant time, never logged."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path

API_KEY_ENV = "PAGODA_API_KEY"  # one key, or several separated by commas


class APIKeyError(ValueError):
    """The configured keys cannot be read."""


def load_api_keys(path: str | None, environ: Mapping[str, str] = os.environ) -> list[str]:
    """Keys from a file (one per line, `#` comments) and from $PAGODA_API_KEY."""
    keys = [k.strip() for k in environ.get(API_KEY_ENV, "").split(",") if k.strip()]
    if path is not None:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as e:
            raise APIKeyError(f"cannot read the API key file {path}: {e.strerror}") from e
        from_file = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        if not from_file:
            raise APIKeyError(f"the API key file {path} holds no keys")
        keys += from_file
    return keys


class KeyChecker:
    def __init__(self, keys: list[str]) -> None:
        # Digests have one length, so comparing them reveals nothing about a key's length.
        self._digests = [_digest(k) for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def allows(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        offered = _digest(token.strip() if scheme.lower() == "bearer" else "")
        matched = False
        for digest in self._digests:  # no early exit: every key costs the same
            matched |= hmac.compare_digest(offered, digest)
        return matched


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()
