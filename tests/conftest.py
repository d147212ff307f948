"""Test beds on real daemons: OVN central, OVS nodes, ovn-controller and a
Kubernetes control plane. Each fixture removes every process, namespace and
directory it made, also when the test fails."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from localcluster import netns as nets
from localcluster.kube import KubeControlPlane, control_plane_netns, kube_bin_dir
from localcluster.ovn import OvnCentral, OvnController, OvsNode
from localcluster.procs import DaemonSet, free_port, log_tail

IN_CI = os.environ.get("CI") == "true"


def _need(reason_missing: str | None) -> None:
    """Skip locally, but fail loudly in CI, where everything must be present."""
    if reason_missing is None:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason_missing}", pytrace=False)
    pytest.skip(reason_missing)


def need_root() -> None:
    _need(None if os.geteuid() == 0 else "needs root (network namespaces, OVS)")


def need_binaries(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    _need(f"missing binaries: {', '.join(missing)}" if missing else None)


def need_kube() -> None:
    needed = ["etcd", "kube-apiserver", "kube-controller-manager", "kubectl"]
    missing = [n for n in needed if not (kube_bin_dir() / n).exists()]
    _need(f"missing Kubernetes binaries in {kube_bin_dir()}: {', '.join(missing)}"
          if missing else None)


@pytest.fixture(scope="session")
def run_prefix() -> str:
    """A short per-run prefix for namespace and interface names."""
    return "ovkt" + secrets.token_hex(2)


def _tempdir() -> Path:
    # Short paths: unix socket paths must stay under 108 bytes.
    return Path(tempfile.mkdtemp(prefix="ovk-", dir="/tmp"))


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = _tempdir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def netns_factory(run_prefix: str) -> Iterator[nets.NetnsSet]:
    """Create namespaces with `.netns(suffix)`; all removed at teardown."""
    need_root()
    s = nets.NetnsSet(f"{run_prefix}{secrets.token_hex(1)}-")
    try:
        yield s
    finally:
        s.cleanup()


@pytest.fixture
def ovn_central(workdir: Path) -> Iterator[OvnCentral]:
    """NB + SB ovsdb-servers (unix sockets and TCP on 127.0.0.1) and ovn-northd."""
    need_root()
    need_binaries("ovsdb-server", "ovn-northd", "ovn-nbctl")
    central = OvnCentral(workdir / "central", tcp_host="127.0.0.1",
                         nb_port=free_port(), sb_port=free_port())
    try:
        yield central.start()
    finally:
        central.stop()


@pytest.fixture
def ovs_node_factory(workdir: Path) -> Iterator[Callable[..., OvsNode]]:
    """Make OVS instances: `factory(name, netns=None)`; br-int is netdev."""
    need_root()
    need_binaries("ovsdb-server", "ovs-vswitchd", "ovs-vsctl")
    nodes: list[OvsNode] = []

    def make(name: str = "node", netns: str | None = None, bridge: str | None = "br-int"
             ) -> OvsNode:
        node = OvsNode(workdir / name, netns=netns)
        nodes.append(node)
        return node.start(bridge=bridge)

    try:
        yield make
    finally:
        for n in reversed(nodes):
            n.stop()


@pytest.fixture
def ovs_node(ovs_node_factory: Callable[..., OvsNode]) -> OvsNode:
    return ovs_node_factory("node")


@pytest.fixture
def ovn_controller_factory() -> Iterator[Callable[..., OvnController]]:
    need_binaries("ovn-controller")
    ctls: list[OvnController] = []

    def make(node: OvsNode, central: OvnCentral, system_id: str, encap_ip: str,
             sb_remote: str | None = None) -> OvnController:
        ctl = OvnController(node, sb_remote or central.sb_unix, system_id, encap_ip)
        ctls.append(ctl)
        return ctl.start()

    try:
        yield make
    finally:
        for c in reversed(ctls):
            c.stop()


def _control_plane(run_prefix: str, suffix: str, controllers: list[str] | None
                   ) -> Iterator[KubeControlPlane]:
    need_root()
    need_kube()
    d = _tempdir()
    ns = nets.NetnsSet(f"{run_prefix}{suffix}-")
    cp: KubeControlPlane | None = None
    try:
        ip = "172.31.255.1"
        name = control_plane_netns(ns, ip)
        cp = KubeControlPlane(d, name, ip, controllers=controllers)
        yield cp.start()
    finally:
        if cp:
            cp.stop()
        ns.cleanup()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def masters(workdir: Path) -> Iterator[DaemonSet]:
    """`ovnkube master` processes a test starts (append them); stopped after,
    with their log tails printed (pytest shows them when the test failed)."""
    ds = DaemonSet()
    try:
        yield ds
    finally:
        logs = [(d.name, d.log_path) for d in ds.daemons]
        ds.stop()
        for name, path in logs:
            print(f"--- {name} log (tail) ---\n{log_tail(path, 60)}")


@pytest.fixture(scope="session")
def kube_api(run_prefix: str) -> Iterator[KubeControlPlane]:
    """etcd + kube-apiserver (RBAC, token admin, service CIDR 10.96.0.0/16)."""
    yield from _control_plane(run_prefix, "k", None)


@pytest.fixture(scope="session")
def kube_cluster(run_prefix: str) -> Iterator[KubeControlPlane]:
    """kube_api plus kube-controller-manager with the controllers tests rely on."""
    yield from _control_plane(run_prefix, "c", [
        "serviceaccount", "serviceaccount-token", "endpointslice", "endpointslicemirroring",
        "namespace", "garbagecollector", "replicaset", "deployment"])


@pytest.fixture(scope="session")
def kube_client(kube_api: KubeControlPlane):  # type: ignore[no-untyped-def]
    client = kube_api.api_client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def chaos_cluster(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A 2-node `ovnkube-local` cluster of its own for the fault tests (they
    kill its daemons), with the chaos workload set up (tests/chaos.py)."""
    need_root()
    need_kube()
    from localcluster.cluster import Cluster
    from tests.chaos import Chaos
    from tests.e2e_helpers import E2E

    c = Cluster.create(f"chaos{secrets.token_hex(2)}", 2)
    try:
        ch = Chaos(E2E(c), tmp_path_factory.mktemp("chaos"))
        ch.set_up()
        yield ch
    finally:
        c.down()


@pytest.fixture(scope="session")
def local_cluster():  # type: ignore[no-untyped-def]
    """A 2-node `ovnkube-local` cluster (real control plane, OVN, OVS, kubelets)."""
    need_root()
    need_kube()
    from localcluster.cluster import Cluster
    from tests.e2e_helpers import E2E

    # OVNKUBE_E2E_NETWORK=helm: the same tests on a network the Helm chart
    # installed (`up --cni none`, then helm install), as a user would have it.
    helm = os.environ.get("OVNKUBE_E2E_NETWORK", "local") == "helm"
    c = Cluster.create(f"e2e{secrets.token_hex(2)}", 2, cni="none" if helm else "ovn")
    try:
        if helm:
            from localcluster import helminstall
            helminstall.install(c)
        yield E2E(c)
    finally:
        c.down()
