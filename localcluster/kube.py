"""A real Kubernetes control plane: etcd, kube-apiserver and, where asked,
kube-controller-manager and kube-scheduler, inside one network namespace.

The apiserver advertises an address on a dummy interface of that namespace
(that is what the `kubernetes` Service points at). The root namespace reaches
it through a loopback port forwarded into the namespace, which is what the
kubeconfig written here uses.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import ssl
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from localcluster import netns as nets
from localcluster.procs import Daemon, DaemonSet, run

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

KUBE_VERSION = os.environ.get("KUBE_VERSION", "v1.33.13")
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_KUBERNETES_IP = "10.96.0.1"


def kube_bin_dir() -> Path:
    cache = Path(os.environ.get("OVNKUBE_CACHE", Path.home() / ".cache" / "ovnkube"))
    return cache / KUBE_VERSION / "bin"


def kube_bin(name: str) -> str:
    path = kube_bin_dir() / name
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path} is missing: run hack/build-kube.sh (or make test)")
    return str(path)


def _openssl(*args: str, cwd: Path) -> None:
    run(["openssl", *args], env={"HOME": str(cwd)}, timeout=60)


def make_pki(d: Path, ips: list[str], dns: list[str]) -> None:
    """CA, apiserver serving cert and service-account key pair, with openssl."""
    d.mkdir(parents=True, exist_ok=True)
    p = str(d)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
             "-keyout", f"{p}/ca.key", "-out", f"{p}/ca.crt", "-subj", "/CN=ovnkube-local-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    san = ",".join([*(f"IP:{i}" for i in ips), *(f"DNS:{n}" for n in dns)])
    ext = d / "apiserver.ext"
    ext.write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{p}/apiserver.key",
             "-out", f"{p}/apiserver.csr", "-subj", "/CN=kube-apiserver", cwd=d)
    _openssl("x509", "-req", "-in", f"{p}/apiserver.csr", "-CA", f"{p}/ca.crt",
             "-CAkey", f"{p}/ca.key", "-CAcreateserial", "-days", "3650",
             "-out", f"{p}/apiserver.crt", "-extfile", str(ext), cwd=d)
    # The apiserver's client certificate towards the kubelets (exec, logs,
    # port-forward), which authenticate it by the cluster CA.
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n"
                                  "keyUsage=critical,digitalSignature,keyEncipherment\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{p}/apiserver-kubelet.key",
             "-out", f"{p}/apiserver-kubelet.csr",
             "-subj", "/O=system:masters/CN=kube-apiserver-kubelet-client", cwd=d)
    _openssl("x509", "-req", "-in", f"{p}/apiserver-kubelet.csr", "-CA", f"{p}/ca.crt",
             "-CAkey", f"{p}/ca.key", "-CAcreateserial", "-days", "3650",
             "-out", f"{p}/apiserver-kubelet.crt", "-extfile", f"{p}/client.ext", cwd=d)
    _openssl("genrsa", "-out", f"{p}/sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", f"{p}/sa.key", "-pubout", "-out", f"{p}/sa.pub", cwd=d)


def write_kubeconfig(path: Path, server: str, ca: Path, token: str) -> Path:
    import base64
    cfg = {
        "apiVersion": "v1", "kind": "Config", "current-context": "ovnkube-local",
        "clusters": [{"name": "ovnkube-local", "cluster": {
            "server": server,
            "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode()}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "ovnkube-local",
                      "context": {"cluster": "ovnkube-local", "user": "admin"}}],
    }
    path.write_text(json.dumps(cfg, indent=2))  # JSON is valid YAML
    path.chmod(0o600)
    return path


@dataclass
class KubeControlPlane:
    workdir: Path
    netns: str
    advertise_ip: str
    controllers: list[str] | None = None  # None: no kube-controller-manager
    scheduler: bool = False
    service_cidr: str = SERVICE_CIDR
    extra_sans: list[str] = field(default_factory=list)
    daemons: DaemonSet = field(default_factory=DaemonSet)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    local_port: int = 0

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def kubeconfig(self) -> Path:
        """For clients in the root namespace (through the loopback forward)."""
        return self.workdir / "admin.kubeconfig"

    @property
    def inner_kubeconfig(self) -> Path:
        """For clients inside network namespaces that route to the advertise IP."""
        return self.workdir / "cluster.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.local_port}"

    def start(self) -> KubeControlPlane:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        etcd_bin, apiserver_bin = kube_bin("etcd"), kube_bin("kube-apiserver")
        make_pki(self.pki, ["127.0.0.1", self.advertise_ip, SERVICE_KUBERNETES_IP,
                            *self.extra_sans],
                 ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                  "kubernetes.default.svc.cluster.local"])
        (self.pki / "tokens.csv").write_text(f'{self.token},admin,admin,"system:masters"\n')
        pki = self.pki
        etcd = self.daemons.start(Daemon("etcd", [
            etcd_bin, "--name=default", f"--data-dir={self.workdir / 'etcd'}",
            "--listen-client-urls=http://127.0.0.1:2379",
            "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=default=http://127.0.0.1:2380",
            "--unsafe-no-fsync", "--log-level=warn", "--quota-backend-bytes=4294967296",
        ], self.workdir / "etcd.log", netns=self.netns))
        etcd.wait_until(lambda: "true" in run(
            ["curl", "-s", "--max-time", "2", "http://127.0.0.1:2379/health"],
            netns=self.netns, check=False, timeout=5), what="healthy")
        api = self.daemons.start(Daemon("kube-apiserver", [
            apiserver_bin, "--etcd-servers=http://127.0.0.1:2379",
            "--bind-address=0.0.0.0", "--secure-port=6443",
            f"--advertise-address={self.advertise_ip}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={self.service_cidr}",
            "--service-node-port-range=30000-32767",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet.key'}",
            # Node names do not resolve here; their addresses are routed.
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--allow-privileged=true", "--profiling=false", "--v=1",
        ], self.workdir / "kube-apiserver.log", netns=self.netns))
        fwd_port_file = self.workdir / "apiserver.port"
        fwd = self.daemons.start(Daemon("apiserver-forward", [
            sys.executable, "-m", "localcluster.portforward", f"--netns={self.netns}",
            f"--target={self.advertise_ip}:6443",
            f"--listen=127.0.0.1:{self.local_port}", f"--port-file={fwd_port_file}",
        ], self.workdir / "apiserver-forward.log",
            env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}))
        fwd.wait_until(fwd_port_file.exists, what="listening")
        self.local_port = int(fwd_port_file.read_text())
        write_kubeconfig(self.kubeconfig, self.server, pki / "ca.crt", self.token)
        write_kubeconfig(self.inner_kubeconfig, f"https://{self.advertise_ip}:6443",
                         pki / "ca.crt", self.token)
        api.wait_until(self.ready, timeout=120, what="ready (/readyz)")
        if self.controllers is not None:
            self.daemons.start(Daemon("kube-controller-manager", [
                kube_bin("kube-controller-manager"),
                f"--kubeconfig={self.inner_kubeconfig}",
                f"--controllers={','.join(self.controllers) or '*'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-cluster-ip-range={self.service_cidr}",
                "--leader-elect=false", "--bind-address=127.0.0.1", "--v=1",
            ], self.workdir / "kube-controller-manager.log", netns=self.netns))
        if self.scheduler:
            self.daemons.start(Daemon("kube-scheduler", [
                kube_bin("kube-scheduler"), f"--kubeconfig={self.inner_kubeconfig}",
                f"--authentication-kubeconfig={self.inner_kubeconfig}",
                f"--authorization-kubeconfig={self.inner_kubeconfig}",
                "--leader-elect=false", "--bind-address=127.0.0.1", "--v=1",
            ], self.workdir / "kube-scheduler.log", netns=self.netns))

    def ready(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        req = urllib.request.Request(f"{self.server}/readyz",
                                     headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=3) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def version(self) -> str:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        req = urllib.request.Request(f"{self.server}/version",
                                     headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            return str(json.load(r)["gitVersion"])

    def kubectl(self, *args: str, timeout: float = 60) -> str:
        return run([kube_bin("kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
                   timeout=timeout)

    def api_client(self) -> ApiClient:
        # Imported here: the kubernetes package is slow to import, and most
        # users of this module never need a client.
        from ovnkube.kubeclient import api_client
        return api_client(str(self.kubeconfig))

    def stop(self) -> None:
        self.daemons.stop()


def control_plane_netns(ns: nets.NetnsSet, ip: str, dev: str = "apiserver0") -> str:
    """A namespace for the control plane with `ip` on a dummy interface."""
    name = ns.netns("cp")
    nets.add_dummy(dev, name)
    nets.add_address(dev, f"{ip}/32", name)
    return name
