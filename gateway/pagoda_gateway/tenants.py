"""Tenants and their API keys: the tenants file, and the key lookup.

Keys are hashed as soon as they are read: the gateway keeps only SHA-256 digests, and compares
every one of them on each lookup, so neither a key nor its position leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

ANONYMOUS = "anonymous"  # the tenant of every request when no tenants are configured


class TenantsFileError(ValueError):
    """The tenants file or a key file cannot be used; the message names the fix."""


class Limits(BaseModel):
    """Per-tenant limits; unset means unlimited."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    concurrent_requests: int | None = Field(None, ge=1)


class TenantEntry(Limits):
    """One tenant of the tenants file: its name, its key (a file, or the key's SHA-256) and
    its limits."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    key_file: Path | None = None
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _one_key(self) -> TenantEntry:
        if (self.key_file is None) == (self.key_sha256 is None):
            raise ValueError(f"tenant {self.name}: set exactly one of keyFile and keySha256")
        return self

    @property
    def limits(self) -> Limits:
        return Limits.model_validate(self.model_dump(include=set(Limits.model_fields)))


class TenantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenants: list[TenantEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> TenantsFile:
        names = [t.name for t in self.tenants]
        if duplicates := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"tenant names must be unique: {', '.join(duplicates)}")
        return self


def load_tenants_file(path: str | Path) -> TenantsFile:
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        found = TenantsFile.model_validate(raw)
    except OSError as e:
        raise TenantsFileError(f"cannot read the tenants file {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise TenantsFileError(f"the tenants file {path} is not YAML: {e}") from e
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'file'}: {err['msg']}" for err in e.errors()
        )
        raise TenantsFileError(f"the tenants file {path} is invalid: {problems}") from e
    for entry in found.tenants:  # a relative keyFile is relative to the tenants file
        if entry.key_file is not None:
            entry.key_file = Path(path).parent / entry.key_file
    return found


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class Tenant:
    name: str
    limits: Limits


class TenantKeys:
    """Bearer key -> tenant. Key files are re-read by `reload()`, so a rotated Secret (the
    kubelet rewrites the mounted file) takes effect without a restart."""

    def __init__(self, entries: list[TenantEntry]) -> None:
        self._entries = entries
        self._digests: list[tuple[bytes, Tenant]] = []
        self.reload()

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    @property
    def tenants(self) -> list[Tenant]:
        return [Tenant(e.name, e.limits) for e in self._entries]

    def reload(self) -> None:
        """Reads every key file again; a file that cannot be read fails the whole reload and
        the keys in use stay."""
        digests = []
        for entry in self._entries:
            digests.append((self._digest_of(entry), Tenant(entry.name, entry.limits)))
        self._digests = digests

    @staticmethod
    def _digest_of(entry: TenantEntry) -> bytes:
        if entry.key_sha256 is not None:
            return bytes.fromhex(entry.key_sha256)
        assert entry.key_file is not None, "TenantEntry sets exactly one of the two"
        try:
            key = entry.key_file.read_text().strip()
        except OSError as e:
            raise TenantsFileError(
                f"tenant {entry.name}: cannot read its key file {entry.key_file}: {e.strerror}"
            ) from e
        if not key:
            raise TenantsFileError(f"tenant {entry.name}: its key file {entry.key_file} is empty")
        return key_digest(key)

    def tenant_for(self, authorization: str | None) -> Tenant | None:
        """The tenant whose key is the bearer token, or None."""
        scheme, _, token = (authorization or "").partition(" ")
        # No key offered: nothing to compare (that tells nothing of the keys), and a keySha256
        # that is the empty key's digest, set by mistake, lets no keyless request in.
        if scheme.lower() != "bearer" or not token.strip():
            return None
        offered = key_digest(token.strip())
        found = None
        for digest, tenant in self._digests:  # no early exit: every key costs the same
            if hmac.compare_digest(offered, digest):
                found = tenant
        return found
