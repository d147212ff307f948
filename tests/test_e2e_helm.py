"""The Helm chart brings the network up on a bare cluster, as a user runs it:
`ovnkube-local up --cni none` (nodes NotReady, no OVN anywhere), then plain
`helm install -f $(ovnkube-local helm-values)`. The kubelets run every part
as pods: the databases, ovn-northd and the masters, OVS, ovn-controller and
the node agents, which install the CNI config on their nodes. Then upgrade,
uninstall (the node given back: NotReady, no CNI config, its IP on eth0)
and install again."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster import helminstall, nodefs
from localcluster.cluster import Cluster
from localcluster.kube import kube_bin
from tests.conftest import need_kube, need_root
from tests.e2e_helpers import E2E, netexec_deployment, wait_for

NS = helminstall.NAMESPACE
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bare() -> Iterator[E2E]:
    need_root()
    need_kube()
    c = Cluster.create(f"hlm{secrets.token_hex(2)}", 2, cni="none")
    try:
        yield E2E(c)
    finally:
        c.down()


def cni_config(e: E2E, node: str) -> list[str]:
    d = nodefs.node_path(e.c.s.node_dir(node) / "fs", "/etc/cni/net.d")
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def pod_get(e: E2E, pod: dict[str, Any], url: str) -> str:
    """curl `url` from inside `pod`, as a user would with kubectl exec."""
    return e.kubectl("exec", pod["metadata"]["name"], "--", "curl", "-sS", "-m", "5",
                     url).strip()


def can_i(e: E2E, account: str, *what: str) -> bool:
    res = subprocess.run([str(kube_bin("kubectl")), f"--kubeconfig={e.c.s.kubeconfig}",
                          "auth", "can-i", *what, f"--as=system:serviceaccount:{NS}:{account}"],
                         capture_output=True, text=True, timeout=30)
    return res.stdout.strip() == "yes"


NETWORK_DAEMONS = ("ovsdb-server", "ovs-vswitchd", "ovn-controller", "ovn-northd", "ovnkube")


def network_daemons(e: E2E) -> list[str]:
    """OVS/OVN/ovnkube processes in the network namespace of any of the nodes."""
    nets = {os.stat(f"/run/netns/{e.c.s.node_netns(n)}").st_ino for n in e.c.s.all_nodes}
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino not in nets:
                continue
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [Path(a.decode(errors="replace")).name for a in args[:3]]
        if any(w in NETWORK_DAEMONS for w in words) or "ovnkube.cli" in " ".join(
                a.decode(errors="replace") for a in args):
            found.append(f"{pid}: {' '.join(a.decode(errors='replace') for a in args)}")
    return found


def test_a_bare_cluster_has_no_network(bare: E2E) -> None:
    e = bare
    assert set(e.c.node_readiness().values()) == {False}
    assert all(cni_config(e, n) == [] for n in e.c.s.all_nodes)
    assert network_daemons(e) == []
    out = subprocess.run([sys.executable, "-m", "localcluster.cli", "helm-values",
                          "--name", e.c.s.name],
                         capture_output=True, text=True, timeout=30, check=True,
                         cwd=ROOT).stdout.strip()
    values = Path(out).read_text()
    assert e.c.s.cp_ip in values and e.c.s.control_plane in values


def test_helm_install_brings_the_network_up(bare: E2E) -> None:
    e = bare
    helminstall.install(e.c)
    assert set(e.c.node_readiness().values()) == {True}
    for n in e.c.s.all_nodes:
        assert cni_config(e, n) == ["10-ovn-kubernetes.conflist"]
    pods = e.pods("app", NS)  # every pod of the chart has an app label
    by_app: dict[str, set[str]] = {}
    for p in pods:
        by_app.setdefault(p["metadata"]["labels"]["app"], set()).add(p["spec"]["nodeName"])
    assert by_app["ovnkube-db"] == {e.c.s.control_plane}
    assert by_app["ovnkube-node"] == by_app["ovs-node"] == set(e.c.s.all_nodes)
    assert len(by_app["ovnkube-master"]) == 2  # two replicas, on two nodes
    # What NOTES.txt tells the user to run: the NB through the database pod.
    show = e.kubectl("-n", NS, "exec", "deploy/ovnkube-db", "-c", "nb-ovsdb", "--",
                     "ovn-nbctl", "--db=unix:/var/run/ovn/ovnnb_db.sock", "show")
    for n in e.c.s.all_nodes:
        assert f"({n})" in show
    assert "ovn_cluster_router" in show


def test_pods_and_services_work_on_the_helm_network(bare: E2E) -> None:
    e = bare
    e.apply(netexec_deployment("web", 2))
    try:
        pods = e.ready_pods("app=web", 2)
        assert len({p["status"]["podIP"] for p in pods}) == 2
        e.kubectl("expose", "deployment", "web", "--port=80", "--target-port=8080")
        ip = e.get("service", "web")["spec"]["clusterIP"]
        names = {p["metadata"]["name"] for p in pods}
        # From a pod, by ClusterIP and by DNS name (CoreDNS runs on this network too).
        src = pods[0]
        seen = set()
        for _ in range(20):
            seen.add(pod_get(e, src, f"http://{ip}/hostname"))
            if seen == names:
                break
        assert seen == names
        got = pod_get(e, src, "http://web.default.svc.cluster.local/hostname")
        assert got in names
    finally:
        e.kubectl("delete", "deployment,service", "web", "--ignore-not-found", "--wait=true",
                  timeout=120)


def test_each_component_has_the_rights_it_needs_and_no_more(bare: E2E) -> None:
    e = bare
    for what in (("patch", "nodes"), ("patch", "pods"), ("watch", "services"),
                 ("watch", "endpointslices.discovery.k8s.io"),
                 ("watch", "networkpolicies.networking.k8s.io"), ("create", "events"),
                 ("update", "leases.coordination.k8s.io", "-n", NS)):
        assert can_i(e, "ovnkube-master", *what), what
    for what in (("delete", "pods"), ("create", "services"), ("get", "secrets")):
        assert not can_i(e, "ovnkube-master", *what), what
    for what in (("patch", "nodes"), ("watch", "pods"), ("watch", "services"),
                 ("watch", "endpointslices.discovery.k8s.io"), ("create", "events"),
                 ("get", "daemonsets/ovnkube-node", "-n", NS)):
        assert can_i(e, "ovnkube-node", *what), what
    # The node agent cannot change pods (its own node's or others') or Services.
    for what in (("patch", "pods"), ("delete", "pods"), ("update", "services"),
                 ("create", "services"), ("get", "secrets"), ("get", "daemonsets/ovs-node",
                                                              "-n", NS)):
        assert not can_i(e, "ovnkube-node", *what), what


def test_upgrade_rolls_the_pods_and_running_pods_keep_their_traffic(bare: E2E) -> None:
    e = bare
    e.apply(netexec_deployment("steady", 2))
    try:
        pods = e.ready_pods("app=steady", 2)
        target = pods[1]["status"]["podIP"]
        before = {p["metadata"]["name"] for p in e.pods("app=ovnkube-node", NS)}
        helminstall.install(e.c, ["logLevel=debug", "master.replicas=1"], upgrade=True)
        after = e.pods("app", NS)  # every pod of the chart has an app label
        agents = [p for p in after if p["metadata"]["labels"]["app"] == "ovnkube-node"]
        assert before.isdisjoint(p["metadata"]["name"] for p in agents)  # rolled
        assert all("--loglevel=debug" in p["spec"]["containers"][-1]["args"] for p in agents)
        wait_for(lambda: len([p for p in e.pods("app=ovnkube-master", NS)
                              if "deletionTimestamp" not in p["metadata"]]) == 1, 120,
                 "one master left")
        # The pods from before the upgrade still reach each other.
        got = pod_get(e, pods[0], f"http://{target}:8080/hostname")
        assert got == pods[1]["metadata"]["name"]
    finally:
        e.kubectl("delete", "deployment", "steady", "--ignore-not-found", "--wait=true",
                  timeout=120)


def test_uninstall_gives_the_nodes_back_and_install_again_works(bare: E2E) -> None:
    e = bare
    helminstall.uninstall(e.c)
    assert set(e.c.node_readiness().values()) == {False}
    assert all(cni_config(e, n) == [] for n in e.c.s.all_nodes)
    assert e.kubectl("-n", NS, "get", "pods", "-o", "name").strip() == ""
    for n in e.c.s.all_nodes:
        addrs = e.node_exec(n, "ip", "-4", "-br", "addr", "show", "eth0")
        assert e.node_ip(n) in addrs, addrs  # the node IP is back on its uplink
        assert "default via" in e.node_exec(n, "ip", "route", "show", "default")
    # No OVS or OVN process is left on any node: every one ran in a pod.
    assert network_daemons(e) == []
    helminstall.install(e.c)
    assert set(e.c.node_readiness().values()) == {True}
    show = e.kubectl("-n", NS, "exec", "deploy/ovnkube-db", "-c", "nb-ovsdb", "--",
                     "ovn-nbctl", "--db=unix:/var/run/ovn/ovnnb_db.sock", "ls-list")
    assert sorted(ln.split()[1].strip("()") for ln in show.splitlines()) == sorted(
        ["ext_" + n for n in e.c.s.all_nodes] + ["join"] + e.c.s.all_nodes)


def raft_role(e: E2E, member: int, db: str = "nb") -> str:
    ctl, name = (("ovnnb_db.ctl", "OVN_Northbound") if db == "nb"
                 else ("ovnsb_db.ctl", "OVN_Southbound"))
    out = e.kubectl("-n", NS, "exec", f"deploy/ovnkube-db-{member}", "-c", f"{db}-ovsdb", "--",
                    "ovs-appctl", "-t", f"/var/run/ovn/{ctl}", "cluster/status", name)
    # no Role line yet: a member still joining
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                 if ln.startswith("Role:")), "")


def test_raft_databases_lose_their_leader_and_no_pod_loses_its_address(bare: E2E) -> None:
    e = bare
    helminstall.uninstall(e.c)
    helminstall.install(e.c, ["ovn.dbReplicas=3"])
    # The install waits for each server to serve, not for the raft elections.
    for db in ("nb", "sb"):
        wait_for(lambda db=db: sorted(raft_role(e, i, db) for i in range(3)) == [
            "follower", "follower", "leader"], 60, f"{db}: one leader, two followers")
    leader = next(i for i in range(3) if raft_role(e, i) == "leader")
    e.apply(netexec_deployment("many", 1))
    try:
        e.ready_pods("app=many", 1)
        e.kubectl("scale", "deployment", "many", "--replicas=16")
        e.kubectl("-n", NS, "delete", "pod", "-l", f"app=ovnkube-db,member={leader}",
                  "--wait=false")
        pods = e.ready_pods("app=many", 16, timeout=240)
        ips = [p["status"]["podIP"] for p in pods]
        assert len(set(ips)) == 16, ips  # none twice
        for p in pods:  # each pod's address is the one the master gave it
            ann = json.loads(p["metadata"]["annotations"]["k8s.ovn.org/pod-networks"])
            assert ann["default"]["ip_addresses"][0].split("/")[0] == p["status"]["podIP"]
        # The member that was lost is back, and the NB lost no port.
        wait_for(lambda: sorted(raft_role(e, i) for i in range(3)) == [
            "follower", "follower", "leader"], 120, "three members again")
        ports = e.c.nbctl("--bare", "--columns=name", "list", "Logical_Switch_Port").split()
        assert {f"default_{p['metadata']['name']}" for p in pods} <= set(ports)
        # ... and pods still reach each other across nodes.
        a = pods[0]
        b = next(p for p in pods if p["spec"]["nodeName"] != a["spec"]["nodeName"])
        got = pod_get(e, a, f"http://{b['status']['podIP']}:8080/hostname")
        assert got == b["metadata"]["name"]
    finally:
        e.kubectl("delete", "deployment", "many", "--ignore-not-found", "--wait=true",
                  timeout=180)


def make_certs(d: Path, ips: list[str]) -> None:
    """A CA, and one certificate for every database address that clients use too."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ovn-ca",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=ovn", "-keyout",
            str(d / "tls.key"), "-out", str(d / "tls.csr"))
    (d / "ext").write_text("subjectAltName=" + ",".join(f"IP:{ip}" for ip in ips)
                           + "\nextendedKeyUsage=serverAuth,clientAuth\n")
    openssl("x509", "-req", "-in", str(d / "tls.csr"), "-CA", str(d / "ca.crt"), "-CAkey",
            str(d / "ca.key"), "-CAcreateserial", "-days", "2", "-extfile", str(d / "ext"),
            "-out", str(d / "tls.crt"))


def test_ssl_databases_with_certificates_from_a_secret(bare: E2E, tmp_path: Path) -> None:
    e = bare
    helminstall.uninstall(e.c)
    make_certs(tmp_path, [e.c.s.node_ip(n) for n in e.c.s.all_nodes])
    # helm uninstall leaves the namespace --create-namespace made; apply is fine either way
    e.kubectl("apply", "-f", "-",
              input=f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n")
    e.kubectl("-n", NS, "create", "secret", "generic", "ovn-ssl",
              *(f"--from-file={f}={tmp_path / f}" for f in ("ca.crt", "tls.crt", "tls.key")))
    helminstall.install(e.c, ["ovn.ssl=true"])
    assert set(e.c.node_readiness().values()) == {True}
    nbctl = ["ovn-nbctl", "--timeout=5", f"--db=ssl:{e.c.s.cp_ip}:6641",
             f"--private-key={tmp_path / 'tls.key'}", f"--certificate={tmp_path / 'tls.crt'}",
             f"--ca-cert={tmp_path / 'ca.crt'}", "ls-list"]
    listed = e.underlay_exec(*nbctl)
    assert all(f"({n})" in listed for n in e.c.s.all_nodes)
    plain = subprocess.run(["ip", "netns", "exec", e.c.s.netns("ul"), "ovn-nbctl",
                            "--timeout=5", f"--db=tcp:{e.c.s.cp_ip}:6641", "ls-list"],
                           capture_output=True, text=True, timeout=30)
    assert plain.returncode != 0  # only SSL is served
    e.apply(netexec_deployment("sslweb", 2))
    try:
        pods = e.ready_pods("app=sslweb", 2)
        got = pod_get(e, pods[0], f"http://{pods[1]['status']['podIP']}:8080/hostname")
        assert got == pods[1]["metadata"]["name"]
    finally:
        e.kubectl("delete", "deployment", "sslweb", "--ignore-not-found", "--wait=true",
                  timeout=120)
