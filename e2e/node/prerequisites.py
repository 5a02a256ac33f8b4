"""What the real-node tier needs from this machine, checked before it changes anything, and
installed from Debian's packages when missing (`make e2e-node` does that)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from e2e.node.containerd import CNI_BIN_DIR
from e2e.node.host import cgroup_hierarchies

# What must be on PATH (or in place), and the Debian package that brings it.
PACKAGES = {
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    f"{CNI_BIN_DIR}/bridge": "containernetworking-plugins",
    f"{CNI_BIN_DIR}/host-local": "containernetworking-plugins",
    f"{CNI_BIN_DIR}/loopback": "containernetworking-plugins",
    "iptables": "iptables",  # kube-proxy's Service rules, in the run's network namespace
    "ip": "iproute2",
    "unshare": "util-linux",
    "debootstrap": "debootstrap",  # the worker image's root filesystem
    "gcc": "gcc",  # the static pause binary
    "go": "golang (or Go from go.dev)",  # the kubelet and control plane, from the module proxy
}
STATIC_LIBC = Path("/usr/lib/x86_64-linux-gnu/libc.a")


def missing() -> dict[str, str]:
    """What is missing, mapped to the package that brings it."""
    gone = {
        what: package
        for what, package in PACKAGES.items()
        if not (Path(what).exists() if what.startswith("/") else shutil.which(what))
    }
    if not STATIC_LIBC.exists():
        gone[str(STATIC_LIBC)] = "libc6-dev"
    return gone


def problems() -> list[str]:
    """Everything that stops the tier, each with the fix, or [] when it can run."""
    found = []
    if os.geteuid() != 0:
        found.append("it must run as root (namespaces, mounts, cgroups): run it with sudo")
    gone = missing()
    if gone:
        packages = " ".join(sorted(set(gone.values())))
        found.append(f"missing {', '.join(sorted(gone))}: apt-get install {packages}")
    if not cgroup_hierarchies():
        found.append("no cgroup hierarchy is mounted under /sys/fs/cgroup")
    return found


def install_missing(log) -> None:
    """apt-get install the Debian packages of what is missing (a fresh CI machine)."""
    packages = sorted({p for p in missing().values() if " " not in p})
    if not packages or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    log(f"e2e-node: installing {' '.join(packages)} from Debian's packages")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=True,
        env=env,
    )
