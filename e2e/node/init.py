"""PID 1 of the real-node tier: `python -m e2e.node.init -- COMMAND...`, run by e2e/node/__main__.py
under `unshare --net --mount --pid --fork --mount-proc`.

It gives the fresh namespaces what a node needs (loopback up, the node address, tmpfs over the
host paths that the kubelet, containerd and the CNI plugins write to), runs COMMAND (pytest), reaps
the orphans that land on it (containerd shims, container processes), and when COMMAND ends kills
everything left in the namespace. The kernel then drops the namespaces, and with them every mount,
interface, iptables rule and process of the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from e2e.control_plane import SERVICE_CIDR
from e2e.node.node import NODE_IP

# Host paths that the kubelet, containerd, runc, CNI plugins and iptables write to without a
# setting to move them (/var/log/containers, /var/lib/cni, /run/netns, /run/xtables.lock ...).
# tmpfs over each, in this mount namespace only: the host's own files are neither seen nor
# touched.
PRIVATE_PATHS = ("/run", "/var/lib", "/var/log")


def setup() -> None:
    _run("ip", "link", "set", "lo", "up")
    _run("ip", "address", "add", f"{NODE_IP}/32", "dev", "lo")
    # The namespace has no default route: give Service addresses one, so a connection from
    # here gets past routing to kube-proxy's DNAT (which re-routes it to a pod on cni0).
    _run("ip", "route", "add", SERVICE_CIDR, "dev", "lo", "src", NODE_IP)
    # Pod to Service to a pod on the same bridge: the reply is bridged, and only
    # bridge-netfilter lets conntrack undo the DNAT on it. Per network namespace.
    Path("/proc/sys/net/bridge/bridge-nf-call-iptables").write_text("1")
    for path in PRIVATE_PATHS:
        _run("mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", path)


def run(command: list[str]) -> int:
    child = subprocess.Popen(command)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, _: child.send_signal(number))
    while True:
        pid, status = os.wait()  # any child: orphans are ours to reap as PID 1
        if pid == child.pid:
            code = os.waitstatus_to_exitcode(status)
            break
    _kill_everything()
    return code if code >= 0 else 128 - code


def _kill_everything() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        os.kill(-1, signal.SIGKILL)  # as PID 1 of the namespace: every process but this one
    except ProcessLookupError:
        return
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return


def _run(*command: str) -> None:
    subprocess.run(command, check=True)


def main(argv: list[str]) -> int:
    if os.getpid() != 1:
        print("e2e.node.init runs as PID 1 of its own namespaces: use `make e2e-node`")
        return 2
    if argv[:1] == ["--"]:
        argv = argv[1:]
    setup()
    return run(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
