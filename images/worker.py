"""The worker image, built with no registry: the same image as docker/worker.Dockerfile.

Two layers, each cached under the folder the caller passes:
- base: Debian bookworm (debootstrap) with Python, a C compiler for Triton's launchers, curl and
  tar, the `pagoda` user, and a venv at /opt/pagoda holding docker/worker.lock.txt. Keyed by the
  suite, the recipe below and the lock's hash; only this layer needs root and the network.
- app: the project's wheel (the default model is package data inside it), keyed by the wheel's
  hash, so a code change rebuilds this small layer only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path

from images import debian, wheels
from images.cache import cached, holding, keep_only
from images.layer import tar_layer
from images.oci import Image, ImageArchive, Layer, write_archive

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "docker/worker.lock.txt"
SUITE = "bookworm"
PYTHON = "3.11"  # bookworm's python3
GLIBC = 36  # bookworm's glibc is 2.36: the newest manylinux wheels it runs
VENV = "/opt/pagoda"
PACKAGES = ["python3", "python3-venv", "python3-dev", "gcc", "libc6-dev", "curl", "tar",
            "ca-certificates"]  # fmt: skip
# Run in the root filesystem with the wheelhouse at /mnt. Debian's own .pyc files check source
# mtimes, which the layer's fixed mtime would make stale: recompiled as hash-checked ones.
BASE_RECIPE = f"""
apt-get update
apt-get -y upgrade
apt-get -y install --no-install-recommends {" ".join(PACKAGES)}
apt-get clean
rm -rf /var/lib/apt/lists/*
groupadd --gid 1000 pagoda
useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp pagoda
mkdir -p /etc/pagoda /models
python3 -m venv {VENV}
{VENV}/bin/pip install --no-cache-dir --no-index --find-links /mnt --require-hashes \
    -r /mnt/{LOCK.name}
python3 -m compileall -q -f --invalidation-mode checked-hash /usr/lib/python{PYTHON} \
    /usr/lib/python3/dist-packages
# debootstrap copied the host's resolv.conf and hostname; runtimes mount their own
: > /etc/resolv.conf
: > /etc/hostname
chmod 644 /etc/resolv.conf /etc/hostname
"""
BASE_EXCLUDE = ["dev/*", "proc/*", "sys/*", "tmp/*", "mnt/*"]
# Equal to docker/worker.Dockerfile's ENV, USER, EXPOSE and CMD (tests/images hold them equal).
CONFIG = {
    "Env": [
        f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/tmp",
        "HF_HOME=/tmp/hf",
        "TRITON_CACHE_DIR=/tmp/triton",
        "PYTHONUNBUFFERED=1",
        "PYTHONDONTWRITEBYTECODE=1",
        # where GKE's device plugin mounts the driver (NVIDIA's CUDA base images set it too)
        "LD_LIBRARY_PATH=/usr/local/nvidia/lib64",
    ],
    "User": "1000:1000",
    "ExposedPorts": {"8000/tcp": {}},
    "Cmd": ["pagoda", "serve", "--host", "0.0.0.0"],
}


def reference() -> str:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    return f"docker.io/library/pagoda-worker:{version}"


def build_worker_image(cache: Path, log: Callable[[str], None] = print) -> ImageArchive:
    """The worker image as an OCI archive in `cache`, rebuilding only what changed."""
    with holding(cache), tempfile.TemporaryDirectory() as tmp:
        logs = cache / "logs"
        base = _base_layer(cache, logs, log)
        log("app: building the project's wheel")
        wheel = wheels.build_project_wheel(REPO, Path(tmp), logs / "wheel.log")
        app = _app_layer(cache, wheel, log)
        image = Image([base, app], CONFIG, reference())
        entry = cache / "archives" / image.manifest_blob.digest.removeprefix("sha256:")
        if not entry.is_dir():
            log(f"archive: writing {image.reference}")
            cached(entry, lambda folder: write_archive(folder / "image.tar", image))
            keep_only(entry)
        return image.archive_at(entry / "image.tar")


def _base_layer(cache: Path, logs: Path, log: Callable[[str], None]) -> Layer:
    lock_hash = _sha256(LOCK.read_bytes())
    key = _sha256(json.dumps([SUITE, BASE_RECIPE, BASE_EXCLUDE, lock_hash]).encode())
    entry = cache / "base" / key[:16]
    if entry.is_dir():
        log(f"base: cached in {entry}")
        return _layer_in(entry)
    debian.check_host()
    sources = debian.apt_sources(SUITE)
    for source in sources:
        debian.check_reachable(source)

    def download(wheelhouse: Path) -> None:
        log(f"base: downloading the {_pins(LOCK)} wheels {LOCK.name} pins (once per lock)")
        wheels.download_locked(LOCK, wheelhouse, PYTHON, GLIBC, logs / "download.log")

    def build(folder: Path) -> None:
        rootfs = folder / "rootfs"
        log(f"base: debootstrap {SUITE} from {sources[0].uri}")
        debian.bootstrap(rootfs, SUITE, sources, logs / "debootstrap.log")
        log(f"base: apt-get install {' '.join(PACKAGES)}; pip install the wheels into {VENV}")
        debian.chroot(rootfs, BASE_RECIPE, logs / "base.log", mnt=wheelhouse)
        log("base: writing the layer tar")
        _name_by_digest(tar_layer(rootfs, folder / "layer.tar", exclude=BASE_EXCLUDE))
        shutil.rmtree(rootfs)  # the app layer needs no chroot, so the layer tar is enough

    wheelhouse = cached(cache / "wheels" / lock_hash[:16], download)
    keep_only(wheelhouse)
    keep_only(cached(entry, build))
    return _layer_in(entry)


def _app_layer(cache: Path, wheel: Path, log: Callable[[str], None]) -> Layer:
    entry = cache / "app" / _sha256(wheel.read_bytes())[:16]
    if entry.is_dir():
        log(f"app: cached in {entry}")
        return _layer_in(entry)

    def build(folder: Path) -> None:
        log(f"app: installing {wheel.name} into {VENV}")
        staging = folder / "staging"
        wheels.install_wheel(wheel, staging, VENV, PYTHON)
        _name_by_digest(tar_layer(staging, folder / "layer.tar", owned_by_root=True))
        shutil.rmtree(staging)

    keep_only(cached(entry, build))
    return _layer_in(entry)


def _name_by_digest(layer: Layer) -> None:
    """Name a layer tar by its digest, which a cached entry then needs no hashing to know."""
    layer.path.rename(layer.path.with_name(layer.digest.removeprefix("sha256:") + ".tar"))


def _layer_in(entry: Path) -> Layer:
    [path] = entry.glob("*.tar")
    return Layer(path, "sha256:" + path.stem, path.stat().st_size)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pins(lock: Path) -> int:
    return sum("==" in line for line in lock.read_text().splitlines())
