"""The node's container runtime: Debian's containerd and runc, private to the tier.

Its state and socket live in the run's folder and its root (images, snapshots, metadata) in the
e2e cache, so nothing touches /var/lib/containerd or /run/containerd. Images come from OCI
archives on disk (no registry): `ctr images import`, skipped when the root already holds the
image, as on a real node that restarts. Containers of an earlier run are dead by then (their
PID namespace is gone); the kubelet garbage-collects them like after a reboot.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from e2e.processes import Process, wait_until

NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin (and so the kubelet) uses
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins


def config(root: Path, state: Path, socket: Path, cni_conf_dir: Path, sandbox_image: str) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""\
version = 2
root = "{root}"
state = "{state}"
# What this run doesn't use: no log noise, no host paths.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{state}/opt"

[{cri}]
  sandbox_image = "{sandbox_image}"
  # root here lacks CAP_SYS_RESOURCE: runc can't lower its own oom_score_adj otherwise.
  restrict_oom_score_adj = true
  enable_selinux = false

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{cni_conf_dir}"
"""


class Containerd:
    def __init__(self, root: Path, workdir: Path, log_dir: Path, sandbox_image: str):
        self.root = root
        self.state = workdir / "containerd-state"
        self.socket = self.state / "containerd.sock"
        self.cni_conf_dir = workdir / "cni"
        self.config_file = workdir / "containerd.toml"
        self.sandbox_image = sandbox_image
        self.process = Process(
            "containerd",
            ["containerd", f"--config={self.config_file}", "--log-level=warn"],
            log_dir / "containerd.log",
        )

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 30) -> None:
        for folder in (self.root, self.state, self.cni_conf_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            config(self.root, self.state, self.socket, self.cni_conf_dir, self.sandbox_image)
        )
        self.process.start(die_with_parent=True)
        wait_until(
            lambda: self.ctr("version", check=False).returncode == 0,
            timeout,
            "containerd to answer on its socket",
            lambda: (
                f"containerd exited: {self.process.log_tail()}"
                if self.process.exited() is not None
                else None
            ),
        )

    def hold_images(self, wanted: dict[str, tuple[Path, str]]) -> dict[str, float | None]:
        """Make the kubelet's namespace hold exactly the `wanted` images, {reference (the name
        the archive gives it): (OCI archive, manifest digest)}: import those it lacks, forget
        the others (containerd then frees their layers). Returns the seconds each import took,
        None where it was held."""
        held = self._images()
        for name in held.keys() - wanted.keys():
            self.ctr("images", "rm", name)
        seconds: dict[str, float | None] = {}
        for reference, (archive, digest) in wanted.items():
            seconds[reference] = None
            if held.get(reference) != digest:
                started = time.monotonic()
                self._import(archive, digest, reference)
                seconds[reference] = time.monotonic() - started
        return seconds

    def _images(self) -> dict[str, str]:
        """Reference -> manifest digest of every image in the namespace."""
        listed = self.ctr("images", "ls").stdout.splitlines()[1:]
        return {fields[0]: fields[2] for fields in map(str.split, listed)}

    def _import(self, archive: Path, digest: str, reference: str) -> None:
        # Unpacked here, once, rather than by the kubelet at the first pod start. The archive
        # names the image (io.containerd.image.name), as containerd's own export does.
        self.ctr("images", "import", "--snapshotter=overlayfs", str(archive), timeout=900)
        if self._images().get(reference) != digest:
            raise RuntimeError(f"{archive}: imported, but {reference} is not digest {digest}")

    def ctr(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["ctr", f"--address={self.socket}", f"--namespace={NAMESPACE}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
        return result
