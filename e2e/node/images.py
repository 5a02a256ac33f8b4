"""The two images the node runs, built on the host before the run (no registry anywhere):
the worker image by the repo's own recipe (images/), and the pod sandbox's `pause`, compiled
here from pause.c into a one-layer image. Both are cached by content under the e2e cache."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from e2e.build import cache_root
from e2e.node.settings import Image
from images.cache import cached, holding
from images.layer import tar_layer
from images.oci import Image as OciImage
from images.oci import ImageArchive, Layer, write_archive
from images.worker import build_worker_image

PAUSE_SOURCE = Path(__file__).with_name("pause.c")


def ensure_images(log) -> dict[str, Image]:
    cache = cache_root() / "images"
    built = {"pause": pause_image(cache), "worker": build_worker_image(cache, log)}
    return {
        name: Image(archive=str(a.path), digest=a.digest, reference=a.reference)
        for name, a in built.items()
    }


def pause_image(cache: Path) -> ImageArchive:
    compiler = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=True)
    key = hashlib.sha256(PAUSE_SOURCE.read_bytes() + compiler.stdout.encode()).hexdigest()[:16]

    def build(folder: Path) -> None:
        root = folder / "root"
        root.mkdir()
        compile_static = ["gcc", "-static", "-O2", "-Wall", "-o", root / "pause", PAUSE_SOURCE]
        subprocess.run(compile_static, check=True)
        layer = tar_layer(root, folder / "layer.tar", owned_by_root=True)
        write_archive(folder / "pause.oci.tar", pause(layer, key))

    with holding(cache):
        folder = cached(cache / "pause" / key, build)
    return pause(Layer.of(folder / "layer.tar"), key).archive_at(folder / "pause.oci.tar")


def pause(layer: Layer, key: str) -> OciImage:
    config = {"Entrypoint": ["/pause"], "User": "65535:65535"}
    return OciImage([layer], config, f"pagoda.dev/e2e/pause:{key}")
