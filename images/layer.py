"""Reproducible layer tars: GNU tar with a fixed member order, owners by number and one mtime, so
the same folder gives the same digest however often it is rebuilt."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from images.oci import Layer

# 1980-01-01, the earliest time a zip (a wheel) can hold; every layer file gets it.
SOURCE_DATE_EPOCH = 315532800


def tar_layer(
    root: Path, output: Path, *, exclude: Sequence[str] = (), owned_by_root: bool = False
) -> Layer:
    """Tar the contents of `root` (not `root` itself) into `output`.

    `exclude`: GNU tar patterns relative to `root`, e.g. "dev/*". `owned_by_root`: for files an
    unprivileged step staged: owned by root in the layer and readable by all, whoever built it.
    """
    reproducible = [
        "--sort=name",
        "--numeric-owner",
        f"--mtime=@{SOURCE_DATE_EPOCH}",
        "--format=posix",
        # pax headers otherwise carry access and change times and a process id
        "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
    ]
    if owned_by_root:
        reproducible += ["--owner=0", "--group=0", "--mode=u+rw,go+rX,go-w"]
    subprocess.run(
        ["tar", "--create", f"--file={output}", f"--directory={root}", *reproducible,
         "--anchored", *(f"--exclude={pattern}" for pattern in exclude),
         "--", *sorted(os.listdir(root))],
        check=True,
    )  # fmt: skip
    return Layer.of(output)
