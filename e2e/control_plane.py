"""etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK as local processes.

Everything listens on 127.0.0.1 on free ports. Certificates, etcd's data and the kubeconfigs live
in a temp folder that stop() removes; the logs go to e2e/.work/<name>/logs/ and stay for a
post-mortem (the next start of the same name replaces them).
The service and pod CIDRs below are only addresses the cluster hands out: in the KWOK tier nothing
dials them. The real-node tier (e2e/node) passes `pod_reachable_ip`: its pods reach the apiserver
through the `kubernetes` Service as in a real cluster (see ControlPlane).
"""

from __future__ import annotations

import ipaddress
import shutil
import ssl
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from e2e import processes
from e2e.build import KWOK_STAGES_DIR
from e2e.pki import CertificateAuthority, CertPair, Identity, KeyPair, service_account_keys
from e2e.processes import Process, free_port, wait_until

E2E_DIR = Path(__file__).resolve().parent
WORK_DIR = E2E_DIR / ".work"
FAULT_STAGES = E2E_DIR / "kwok" / "faults.yaml"
SERVICE_CIDR = "10.96.0.0/16"
# The `kubernetes` Service's ClusterIP: the apiserver takes the range's first address for it.
KUBERNETES_SERVICE_IP = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
POD_CIDR = "10.244.0.0/16"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"

ADMIN = Identity("admin", "pagoda-e2e-admin", ("system:masters",))
# The users the bootstrap RBAC policy already grants each component's permissions.
CONTROLLER_MANAGER = Identity("kube-controller-manager", "system:kube-controller-manager")
SCHEDULER = Identity("kube-scheduler", "system:kube-scheduler")
KWOK = Identity("kwok", "kwok-controller", ("system:masters",))
FRONT_PROXY = Identity("front-proxy-client", "front-proxy-client")


class ControlPlaneError(RuntimeError):
    """The control plane did not come up; the message carries the logs' tails."""


class ControlPlane:
    """`pod_reachable_ip` None (the KWOK tier, on the host's network): the apiserver listens on
    127.0.0.1 only and the `kubernetes` Service has no endpoints. An address (the real-node
    tier, inside its own network namespace): the apiserver listens on every address there,
    publishes that one as the `kubernetes` Service's endpoint, and its certificate names it and
    the Service's ClusterIP, so pods reach it in-cluster (ServiceAccount token and CA)."""

    def __init__(
        self,
        bin_dir: Path,
        name: str,
        die_with_parent: bool = True,
        kwok: bool = True,
        pod_reachable_ip: str | None = None,
    ):
        self.bin_dir = bin_dir
        self.log_dir = WORK_DIR / name / "logs"
        self.die_with_parent = die_with_parent
        self.kwok = kwok  # the real-node tier (e2e/node) runs a kubelet instead
        self.pod_reachable_ip = pod_reachable_ip
        self.workdir: Path | None = None
        self.ca: CertificateAuthority | None = None
        self.processes: list[Process] = []
        self.server = ""

    @property
    def kubeconfig(self) -> Path:
        assert self.workdir is not None, "the control plane is not started"
        return self.workdir / f"{ADMIN.name}.kubeconfig"

    def start(self, timeout: float = 90) -> float:
        """Start every component and wait until each serves; return the seconds it took."""
        started = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="pagoda-e2e-"))
        shutil.rmtree(self.log_dir, ignore_errors=True)
        self.log_dir.mkdir(parents=True)
        try:
            self._start_all(started + timeout)
        except Exception as error:
            report = self.log_report()
            self.stop()
            raise ControlPlaneError(f"{error}\n{report}") from error
        return time.monotonic() - started

    def stop(self) -> None:
        """Stop the components newest first, then remove the temp folder (logs stay)."""
        for process in reversed(self.processes):
            if process.popen is not None:
                processes.stop_pid(process.pid)
        self.processes = []
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def log_report(self, lines: int = 30) -> str:
        sections = [f"--- {p.name} ({p.log}) ---\n{p.log_tail(lines)}" for p in self.processes]
        return "\n".join(sections)

    def _start_all(self, deadline: float) -> None:
        work = self.workdir
        ca = self.ca = CertificateAuthority(work)
        sa = service_account_keys(work)
        etcd_url = f"http://127.0.0.1:{free_port()}"
        self.server = f"https://127.0.0.1:{free_port()}"
        identities = (ADMIN, CONTROLLER_MANAGER, SCHEDULER, KWOK)
        clients = {who.name: ca.client(who) for who in identities}
        kubeconfigs = {
            who.name: self._kubeconfig(work, ca.pair.cert, clients[who.name], who)
            for who in identities
        }
        self._start_etcd(work, etcd_url, deadline)
        self._start_apiserver(work, ca, sa, etcd_url, clients[ADMIN.name], deadline)
        health_ports = self._start_controllers(work, ca, sa, kubeconfigs)
        if self.kwok:
            self._start_kwok(kubeconfigs[KWOK.name])
        self._wait_healthy(health_ports, deadline)

    def _start_etcd(self, work: Path, url: str, deadline: float) -> None:
        peer_url = f"http://127.0.0.1:{free_port()}"
        self._spawn(
            "etcd",
            f"--data-dir={work / 'etcd'}",
            "--name=e2e",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=e2e={peer_url}",
            "--unsafe-no-fsync",  # throwaway data: durability buys nothing here
            "--log-level=warn",
        )
        self._wait(deadline, "etcd /health", lambda: _get_ok(f"{url}/health"))

    def _start_apiserver(
        self,
        work: Path,
        ca: CertificateAuthority,
        sa: KeyPair,
        etcd_url: str,
        admin: CertPair,
        deadline: float,
    ) -> None:
        serving = ca.serving("kube-apiserver", self._pod_facing_ips())
        front_proxy = ca.client(FRONT_PROXY)
        self._spawn(
            "kube-apiserver",
            f"--etcd-servers={etcd_url}",
            f"--secure-port={self.server.rsplit(':', 1)[1]}",
            *self._address_args(),
            f"--cert-dir={work / 'kube-apiserver'}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={ca.pair.cert}",
            # The front-proxy (aggregation) setup of a real cluster; the controller manager and
            # scheduler read this CA from the apiserver and complain while it is missing.
            f"--requestheader-client-ca-file={ca.pair.cert}",
            f"--requestheader-allowed-names={FRONT_PROXY.user}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={front_proxy.cert}",
            f"--proxy-client-key-file={front_proxy.key}",
            # Node: what a kubelet may read and write, as in a real cluster (e2e/node).
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            # A real node is reached by its address; a node name need not resolve.
            "--kubelet-preferred-address-types=InternalIP",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa.public}",
            f"--service-account-signing-key-file={sa.private}",
            "--profiling=false",
        )
        tls = _tls(ca.pair.cert, admin)
        self._wait(
            deadline, "kube-apiserver /readyz", lambda: _get_ok(f"{self.server}/readyz", tls)
        )

    def _start_controllers(
        self, work: Path, ca: CertificateAuthority, sa: KeyPair, kubeconfigs: dict[str, Path]
    ) -> dict[str, int]:
        """kube-controller-manager and kube-scheduler; returns the port each serves /healthz on."""
        health_ports = {}
        for name, identity, extra in (
            (
                "kube-controller-manager",
                CONTROLLER_MANAGER,
                [
                    f"--service-account-private-key-file={sa.private}",
                    f"--root-ca-file={ca.pair.cert}",
                    f"--cluster-signing-cert-file={ca.pair.cert}",
                    f"--cluster-signing-key-file={ca.pair.key}",
                    "--use-service-account-credentials=true",
                ],
            ),
            ("kube-scheduler", SCHEDULER, []),
        ):
            health_ports[name] = free_port()
            kubeconfig = kubeconfigs[identity.name]
            self._spawn(
                name,
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={health_ports[name]}",
                f"--cert-dir={work / name}",
                "--leader-elect=false",
                *extra,
            )
        return health_ports

    def _wait_healthy(self, health_ports: dict[str, int], deadline: float) -> None:
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # their self-signed certs, on 127.0.0.1
        for name, port in health_ports.items():
            url = f"https://127.0.0.1:{port}/healthz"
            self._wait(deadline, f"{name} /healthz", lambda url=url: _get_ok(url, insecure))

    def _pod_facing_ips(self) -> tuple[str, ...]:
        if self.pod_reachable_ip is None:
            return ()
        return (self.pod_reachable_ip, KUBERNETES_SERVICE_IP)

    def _address_args(self) -> list[str]:
        if self.pod_reachable_ip is None:
            return [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # The apiserver may not publish a loopback endpoint for the `kubernetes` Service.
                "--endpoint-reconciler-type=none",
            ]
        # Every address of the run's private network namespace: 127.0.0.1 for the clients
        # here, the node address for pods (the default reconciler publishes it with the port).
        return ["--bind-address=0.0.0.0", f"--advertise-address={self.pod_reachable_ip}"]

    def _start_kwok(self, kubeconfig: Path) -> None:
        stages = [*sorted((self.bin_dir / KWOK_STAGES_DIR).glob("*.yaml")), FAULT_STAGES]
        self._spawn(
            "kwok",
            f"--kubeconfig={kubeconfig}",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            # Fake nodes point at loopback, so anything that dials a node stays on this machine.
            "--node-ip=127.0.0.1",
            f"--cidr={POD_CIDR}",
            "--node-lease-duration-seconds=40",
            *(f"--config={stage}" for stage in stages),
        )

    def issue_kubeconfig(self, who: Identity) -> Path:
        """A kubeconfig with a fresh client certificate for `who` (a kubelet, kube-proxy)."""
        assert self.workdir is not None and self.ca is not None, "the control plane is not started"
        return self._kubeconfig(self.workdir, self.ca.pair.cert, self.ca.client(who), who)

    def _spawn(self, binary: str, *args: str) -> None:
        process = Process(
            binary, [str(self.bin_dir / binary), *args], self.log_dir / f"{binary}.log"
        )
        self.processes.append(process)
        process.start(self.die_with_parent)

    def _wait(self, deadline: float, what: str, check) -> None:
        wait_until(check, deadline - time.monotonic(), what, self._dead_process)

    def _dead_process(self) -> str | None:
        for process in self.processes:
            code = process.exited()
            if code is not None:
                return f"{process.name} exited with code {code}"
        return None

    def _kubeconfig(self, work: Path, ca: Path, client: CertPair, who: Identity) -> Path:
        path = work / f"{who.name}.kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "pagoda-e2e",
                    "cluster": {"server": self.server, "certificate-authority": str(ca)},
                }
            ],
            "users": [
                {
                    "name": who.user,
                    "user": {"client-certificate": str(client.cert), "client-key": str(client.key)},
                }
            ],
            "contexts": [
                {"name": "pagoda-e2e", "context": {"cluster": "pagoda-e2e", "user": who.user}}
            ],
            "current-context": "pagoda-e2e",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path


def _tls(ca: Path, client: CertPair) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(client.cert), str(client.key))
    return context


def _get_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return response.status == 200
    except OSError:  # refused, reset, TLS not up yet, HTTP error status
        return False
