"""The two images the node runs, built on the host before the run (no registry anywhere):
the worker image by the repo's own recipe (images/), and the pod sandbox's `pause`, compiled
here from pause.c into a one-layer image. Both are cached by content under the e2e cache."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path

from e2e.build import cache_root
from e2e.node.settings import Image
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
    folder = cache / f"pause-{key}"
    layer_tar, archive = folder / "layer.tar", folder / "pause.oci.tar"
    if not layer_tar.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as scratch:
            binary = Path(scratch, "pause")
            subprocess.run(
                ["gcc", "-static", "-O2", "-Wall", "-o", binary, PAUSE_SOURCE], check=True
            )
            tar_layer(Path(scratch), layer_tar, owned_by_root=True)
    config = {"Entrypoint": ["/pause"], "User": "65535:65535"}
    image = OciImage([Layer.of(layer_tar)], config, f"pagoda.dev/e2e/pause:{key}")
    return image.archive_at(archive) if archive.exists() else write_archive(archive, image)
