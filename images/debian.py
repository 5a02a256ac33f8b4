"""The Debian base: debootstrap from the mirror the host's apt already uses, then a script run in
the new root filesystem through chroot.

Both run inside a private mount namespace (`unshare --mount`): every mount made for them (/proc,
/dev, the wheelhouse) vanishes with the namespace, even when the build is killed, so the host is
never left changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from images.layer import SOURCE_DATE_EPOCH
from images.process import BuildError, run_step

PRIVATE_MOUNTS = ["unshare", "--mount", "--propagation", "private", "--"]
# $1: the root filesystem, $2: a folder to show at /mnt (or ""), then the command to run there.
MOUNT_AND_CHROOT = """
root=$1 mnt=$2; shift 2
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
if [ -n "$mnt" ]; then mount --bind "$mnt" "$root/mnt"; fi
exec chroot "$root" "$@"
"""
CHROOT_ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LC_ALL=C.UTF-8",
    "DEBIAN_FRONTEND=noninteractive",
    # Python then writes hash-checked .pyc files, which the layer's fixed mtimes leave valid.
    f"SOURCE_DATE_EPOCH={SOURCE_DATE_EPOCH}",
]
# each tool the base layer needs, and the Debian package that has it
TOOLS = {"debootstrap": "debootstrap", "unshare": "util-linux", "mount": "mount",
         "chroot": "coreutils", "tar": "tar"}  # fmt: skip


@dataclass(frozen=True)
class AptSource:
    uri: str
    suite: str

    @property
    def line(self) -> str:
        return f"deb {self.uri} {self.suite} main"


def check_host() -> None:
    """Building a root filesystem needs root and a few tools: say which is missing and how to
    get it."""
    if os.geteuid() != 0:
        raise BuildError(
            "building the base layer needs root (debootstrap, chroot and mount do): run it with "
            "sudo, e.g. sudo .venv/bin/python -m images worker"
        )
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} is missing: apt-get install {package}")


def apt_sources(suite: str) -> list[AptSource]:
    """The host's sources for `suite` and its -updates and -security suites, as apt reads them."""
    if shutil.which("apt-get") is None:
        raise BuildError(
            "the base layer comes from the Debian mirror this host's apt uses, and there is no "
            f"apt here: build on Debian {suite}"
        )
    listed = subprocess.run(
        ["apt-get", "indextargets", "--format", "$(REPO_URI) $(RELEASE)",
         "Created-By: Packages", "COMPONENT: main"],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")  # fmt: skip
    sources = []
    for line in dict.fromkeys(filter(None, listed)):
        uri, release = line.split()
        if release == suite or release.startswith(f"{suite}-"):
            sources.append(AptSource(uri, release))
    if not any(source.suite == suite for source in sources):
        raise BuildError(
            f"apt on this host has no source for Debian {suite} (main), and the base layer is "
            f"built from the mirror apt uses: build on Debian {suite}, or add "
            f"'deb http://deb.debian.org/debian {suite} main' to /etc/apt/sources.list"
        )
    return sources


def check_reachable(source: AptSource) -> None:
    url = f"{source.uri.rstrip('/')}/dists/{source.suite}/Release"
    try:
        with urllib.request.urlopen(url, timeout=20):
            pass
    except (urllib.error.URLError, TimeoutError) as error:
        raise BuildError(
            f"cannot reach the Debian mirror at {url} ({error}): the base layer is built from it. "
            "Check the network (or set http_proxy), then build again; once built, the base layer "
            "is cached and needs no network."
        ) from error


def bootstrap(rootfs: Path, suite: str, sources: list[AptSource], log_file: Path) -> None:
    """A minimal Debian `suite` in `rootfs`, with apt pointed at all of `sources`."""
    main = next(source for source in sources if source.suite == suite)
    run_step([*PRIVATE_MOUNTS, "debootstrap", "--variant=minbase", suite, str(rootfs), main.uri],
             log_file)  # fmt: skip
    (rootfs / "etc/apt/sources.list").write_text("".join(f"{s.line}\n" for s in sources))


def chroot(rootfs: Path, script: str, log_file: Path, mnt: Path | None = None) -> None:
    """Run the shell `script` as root in `rootfs`, with `mnt` (if given) shown at /mnt."""
    run_step(
        [*PRIVATE_MOUNTS, "sh", "-euc", MOUNT_AND_CHROOT, "sh", str(rootfs), str(mnt or ""),
         "/usr/bin/env", "-i", *CHROOT_ENV, "sh", "-euxc", script],
        log_file,
    )  # fmt: skip
