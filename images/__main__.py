"""`python -m images worker [--cache DIR] [--output FILE]`: build the worker image offline."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from images.process import BuildError
from images.worker import build_worker_image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m images", description=__doc__)
    images = parser.add_subparsers(dest="image", metavar="IMAGE", required=True)
    worker = images.add_parser("worker", help="the inference worker (docker/worker.Dockerfile)")
    worker.add_argument(
        "--cache",
        type=Path,
        default=Path("~/.cache/pagoda/images").expanduser(),
        help="where layers and the archive are kept (default: %(default)s)",
    )
    worker.add_argument("--output", type=Path, help="also put the OCI archive here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        archive = build_worker_image(args.cache)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    path = archive.path
    if args.output:
        _place(path, args.output)
        path = args.output
    print(f"built {archive.reference} in {time.monotonic() - started:.0f} s: {path}")
    print(f"  manifest {archive.digest}, layers {archive.size_bytes / 1e9:.2f} GB uncompressed")
    print(f"  load it: ctr -n k8s.io images import {path}  |  podman load -i {path}")
    return 0


def _place(archive: Path, output: Path) -> None:
    """A hard link when `output` is on the cache's file system (the archive runs to gigabytes)."""
    output.unlink(missing_ok=True)
    try:
        os.link(archive, output)
    except OSError:
        shutil.copyfile(archive, output)


if __name__ == "__main__":
    sys.exit(main())
