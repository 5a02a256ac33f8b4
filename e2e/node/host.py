"""The only changes the real-node tier makes to this host, recorded before they are made and
undone after the run, or at the next start when a run died before it could clean up.

Everything else lives in namespaces that vanish with the run: the network (node address, pod
bridge, kube-proxy's iptables rules), the mounts (container root filesystems, tmpfs over /run,
/var/lib and /var/log) and the processes. Two things can't be namespaced:
- sysctls the kubelet insists on (it refuses to start if it can't set them);
- cgroups: the kubelet and runc put pods under /sys/fs/cgroup/<controller>/pagoda-e2e.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

# The kernel settings the kubelet sets at start (pkg/kubelet/cm: setupKernelTunables).
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
CGROUP_ROOT = "pagoda-e2e"  # the kubelet's cgroupRoot: every pod cgroup lives below it
CGROUPFS = Path("/sys/fs/cgroup")
SYSCTL_DIR = Path("/proc/sys")

Log = Callable[[str], None]


@dataclass
class HostState:
    """What to put back: the sysctls' values before the run, the cgroup folders made, and the
    run's own folders (container root filesystems are big: a dead run's must not pile up)."""

    sysctls: dict[str, str] = field(default_factory=dict)
    cgroups: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> HostState | None:
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(asdict(self), indent=2))
        partial.replace(path)


def describe_changes() -> str:
    names = ", ".join(name.replace("/", ".") for name in KUBELET_SYSCTLS)
    return (
        f"e2e-node changes this host only here, and puts it back when the run ends (or at the"
        f" next start if a run died): the sysctls {names} (the kubelet sets them), and cgroup"
        f" folders {CGROUPFS}/*/{CGROUP_ROOT}. Network, mounts, /run, /var and processes live"
        " in namespaces of the run and vanish with it."
    )


def prepare(state_file: Path, workdir: Path, log: Log) -> None:
    """Undo a dead run's leftovers, record the current values, make the cgroup root and the
    run's folder."""
    restore(state_file, log)
    state = HostState(
        sysctls={name: _read_sysctl(name) for name in KUBELET_SYSCTLS},
        cgroups=[str(hierarchy / CGROUP_ROOT) for hierarchy in cgroup_hierarchies()],
        folders=[str(workdir)],
    )
    state.save(state_file)  # before the first change: a crash from here on is recoverable
    workdir.mkdir(parents=True)
    for folder in map(Path, state.cgroups):
        folder.mkdir(exist_ok=True)
        if folder.parent.name == "cpuset":
            # A new v1 cpuset starts empty and takes no tasks until given cpus and mems.
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (folder / knob).write_text((folder.parent / knob).read_text())


def restore(state_file: Path, log: Log) -> None:
    """Put back what `state_file` recorded, then forget it. Nothing recorded: nothing to do."""
    state = HostState.load(state_file)
    if state is None:
        return
    for name, value in state.sysctls.items():
        if _read_sysctl(name) != value:
            (SYSCTL_DIR / name).write_text(value)
            log(f"e2e-node: restored {name.replace('/', '.')} = {value}")
    for folder in map(Path, state.cgroups):
        _remove_cgroup_tree(folder)
    for folder in state.folders:
        shutil.rmtree(folder, ignore_errors=True)
    state_file.unlink()


def _read_sysctl(name: str) -> str:
    return (SYSCTL_DIR / name).read_text().strip()


def cgroup_hierarchies() -> list[Path]:
    """Where pod cgroups go: /sys/fs/cgroup itself on a unified (v2) layout, else each
    hierarchy under it, v1 and, on a hybrid layout like this machine's, the unified one."""
    mounts = [line.split()[1:3] for line in Path("/proc/self/mounts").read_text().splitlines()]
    found = [Path(where) for where, kind in mounts if kind in ("cgroup", "cgroup2")]
    return sorted(where for where in found if CGROUPFS in (where, where.parent))


def _remove_cgroup_tree(top: Path, timeout: float = 30) -> None:
    """rmdir leaf first. A cgroup can't go while a task is in it: the run's processes die with
    its PID namespace, but the kernel may take a moment to finish them."""
    if not top.exists():
        return
    deadline = time.monotonic() + timeout
    while True:
        for folder, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
            with contextlib.suppress(OSError):
                Path(folder).rmdir()
        if not top.exists():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"cannot remove {top}: tasks are still in it")
        time.sleep(0.2)
