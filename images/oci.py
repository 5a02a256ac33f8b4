"""A small OCI image-layout writer: uncompressed layer tars and a runtime config in, one tar
archive out, which `ctr images import`, `podman load` and `skopeo copy oci-archive:` read.

Everything written is a pure function of its inputs, so the same layers give the same digests.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
# What containerd itself writes on export: it names the imported image from the first; the OCI
# annotation holds only the tag.
IMAGE_NAME = "io.containerd.image.name"
REF_NAME = "org.opencontainers.image.ref.name"
# domain/path:tag, the name containerd and the kubelet look an image up by.
FULL_REFERENCE = re.compile(
    r"(?P<domain>localhost|[\w-]+(\.[\w-]+)+)(:\d+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)+"
    r":(?P<tag>\w[\w.-]{0,127})"
)


@dataclass(frozen=True)
class Layer:
    """An uncompressed layer tar; its sha256 is both its digest and its diff_id."""

    path: Path
    digest: str
    size: int

    @classmethod
    def of(cls, path: Path) -> Layer:
        with path.open("rb") as f:
            digest = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
        return cls(path, digest, path.stat().st_size)


@dataclass(frozen=True)
class ImageArchive:
    path: Path  # the OCI image-layout tar
    reference: str
    digest: str  # the manifest's
    size_bytes: int  # the layers', uncompressed


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @classmethod
    def json(cls, media_type: str, value: Any) -> Blob:
        return cls(media_type, json.dumps(value, sort_keys=True, separators=(",", ":")).encode())

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}


@dataclass(frozen=True)
class Image:
    """Layers (bottom first), the runtime config (Env, Cmd, User, ExposedPorts, ...) and the full
    reference the image is named by, e.g. docker.io/library/pagoda-worker:0.1.0."""

    layers: Sequence[Layer]
    config: dict[str, Any]
    reference: str
    architecture: str = "amd64"

    def __post_init__(self) -> None:
        if not FULL_REFERENCE.fullmatch(self.reference):
            raise ValueError(
                f"image reference {self.reference!r} must be a full name with a tag, such as "
                "docker.io/library/pagoda-worker:0.1.0 (containerd and the kubelet look images "
                "up by that full name)"
            )

    @property
    def config_blob(self) -> Blob:
        return Blob.json(
            CONFIG_TYPE,
            {
                "architecture": self.architecture,
                "os": "linux",
                "config": self.config,
                "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in self.layers]},
            },
        )

    @property
    def manifest_blob(self) -> Blob:
        layers = [
            {"mediaType": LAYER_TYPE, "digest": layer.digest, "size": layer.size}
            for layer in self.layers
        ]
        return Blob.json(
            MANIFEST_TYPE,
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": self.config_blob.descriptor(),
                "layers": layers,
            },
        )

    @property
    def index_blob(self) -> Blob:
        full = FULL_REFERENCE.fullmatch(self.reference)
        assert full is not None, "__post_init__ checked the reference"
        tag = full["tag"]
        manifest = {
            **self.manifest_blob.descriptor(),
            "platform": {"architecture": self.architecture, "os": "linux"},
            "annotations": {IMAGE_NAME: self.reference, REF_NAME: tag},
        }
        return Blob.json(INDEX_TYPE, {"schemaVersion": 2, "manifests": [manifest]})

    def archive_at(self, path: Path) -> ImageArchive:
        size = sum(layer.size for layer in self.layers)
        return ImageArchive(path, self.reference, self.manifest_blob.digest, size)


def write_archive(output: Path, image: Image) -> ImageArchive:
    """Write `image` as an OCI image-layout tar at `output` (through a temporary file beside it,
    so a half-written archive never sits at `output`)."""
    partial = output.with_name(f".partial-{output.name}")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as archive:
        for folder in ("blobs", "blobs/sha256"):
            archive.addfile(_entry(folder, 0, tarfile.DIRTYPE))
        for blob in (image.config_blob, image.manifest_blob):
            _add_bytes(archive, _blob_name(blob.digest), blob.data)
        for layer in image.layers:
            with layer.path.open("rb") as f:
                archive.addfile(_entry(_blob_name(layer.digest), layer.size), f)
        _add_bytes(archive, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add_bytes(archive, "index.json", image.index_blob.data)
    partial.rename(output)
    return image.archive_at(output)


def _blob_name(digest: str) -> str:
    return "blobs/" + digest.replace(":", "/")


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    archive.addfile(_entry(name, len(data)), io.BytesIO(data))


def _entry(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    """A member with fixed owner, mode and time: the archive depends on its contents only."""
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime = kind, size, 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info
