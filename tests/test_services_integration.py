"""Services against a real kube-apiserver (+controller-manager), a real NB and
`ovnkube master` as a process: load balancers appear, change on endpoint churn
and Service edits, vanish on delete, and survive a master restart untouched.

What the master wrote is read back from the NB itself: rows and their `_uuid`
through ovn-nbctl, and every committed transaction from the NB database file
(`ovsdb-tool show-log -m`: one record per transaction, with the writer's
comment, `northd_sync: N owner(s)`, and the rows it touched).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from localcluster.kube import KubeControlPlane
from localcluster.ovn import OvnCentral
from localcluster.procs import DaemonSet
from ovnkube.annotations import NODE_CHASSIS_ID
from ovnkube.kubeclient import node_path, patch_annotations
from tests.master_helpers import KubeObjects, eventually, run_master
from tests.nblog import log_mark, nb_log, nb_table, ours, settle

MASQ = "169.254.169.1"  # the gateway router's masquerade VIP: the node host's own NodePorts
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
SERVICE_NAME = "kubernetes.io/service-name"


# --- reading the NB -------------------------------------------------------------

def lbs(central: OvnCentral, prefix: str = "Service_") -> dict[str, dict[str, Any]]:
    """Load balancer name -> {_uuid, vips, options, external_ids, selection_fields}."""
    rows = nb_table(central, "Load_Balancer",
                    "_uuid,name,vips,options,external_ids,protocol,selection_fields")
    return {r["name"]: r for r in rows if r["name"].startswith(prefix)}


def lb_refs(central: OvnCentral, table: str, name: str) -> set[str]:
    """UUIDs of the load balancers a group, switch or router holds."""
    for r in nb_table(central, table, "name,load_balancer"):
        if r["name"] == name:
            v = r["load_balancer"]
            return set(v) if isinstance(v, list) else {v}
    raise AssertionError(f"{table} {name} not in the NB")


def lb_writes(central: OvnCentral, since: int) -> list[set[str]]:
    """For each of the master's transactions since `since` that touched load
    balancers: the names of the load balancers it wrote."""
    return [t.touched("Load_Balancer") for t in ours(nb_log(central), since)
            if t.touched("Load_Balancer")]


# --- Kubernetes objects -----------------------------------------------------------

def service(name: str, *, type: str = "ClusterIP", ports: list[dict[str, Any]] | None = None,
            **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"type": type, "ports": ports or [
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}], **spec}}
    return body


def endpoint_slice(name: str, svc: str, port_name: str, port: int, proto: str,
                   eps: list[tuple[str, str, bool]]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": name, "labels": {SERVICE_NAME: svc, MANAGED_BY: "tests"}},
        "ports": [{"name": port_name, "port": port, "protocol": proto}],
        "endpoints": [{"addresses": [ip], "nodeName": node, "conditions": {"ready": ready}}
                      for ip, node, ready in eps]}


class Objects(KubeObjects):
    def __init__(self, cp: KubeControlPlane) -> None:
        super().__init__(cp)
        self.disc = client.DiscoveryV1Api(self.api)

    def namespace(self, prefix: str = "t") -> str:
        # kube_cluster's serviceaccount controller makes "default" itself.
        ns = f"{prefix}-{self.suffix}"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        self.namespaces.append(ns)
        return ns

    def svc(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.api.sanitize_for_serialization(
            self.core.create_namespaced_service(ns, body)))

    def patch_svc(self, ns: str, name: str, patch: dict[str, Any] | list[Any]) -> None:
        self.core.patch_namespaced_service(name, ns, patch)

    def slice(self, ns: str, body: dict[str, Any]) -> None:
        self.disc.create_namespaced_endpoint_slice(ns, body)

    def replace_slice(self, ns: str, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        cur = self.disc.read_namespaced_endpoint_slice(name, ns)
        body = {**body, "metadata": {**body["metadata"],
                                     "resourceVersion": cur.metadata.resource_version}}
        self.disc.replace_namespaced_endpoint_slice(name, ns, body)


# --- fixtures -------------------------------------------------------------------------

@pytest.fixture
def kobj(kube_cluster: KubeControlPlane) -> Iterator[Objects]:
    k = Objects(kube_cluster)
    try:
        yield k
    finally:
        k.cleanup()


def no_leftovers(k: Objects) -> None:
    """Wait until no Service of an earlier test is still going away (namespaces
    end asynchronously), so that nothing else changes while a master restarts.
    A namespace may stay Terminating for good (pods bound to a node whose
    kubelet is gone), but its Services are deleted first."""
    def gone() -> bool:
        terminating = {n.metadata.name for n in k.core.list_namespace().items
                       if n.status.phase == "Terminating"}
        return not [s for s in k.core.list_service_for_all_namespaces().items
                    if s.metadata.namespace in terminating]
    eventually(gone, timeout=120, what="services of earlier tests' namespaces gone")


def two_nodes(k: Objects, central: OvnCentral) -> tuple[str, str, dict[str, str]]:
    a = k.node("sa", gateway_ip="172.18.0.21")
    b = k.node("sb", gateway_ip="172.18.0.22")
    eventually(lambda: {f"GR_{a}", f"GR_{b}"} <= set(central.nbctl(
        "--bare", "--columns=name", "list", "Logical_Router").split()), what="gateway routers")
    return a, b, {a: "172.18.0.21", b: "172.18.0.22"}


# --- tests -------------------------------------------------------------------------------

def test_lbs_appear_change_and_vanish(kube_cluster: KubeControlPlane, ovn_central: OvnCentral,
                                      kobj: Objects, masters: DaemonSet, workdir: Path) -> None:
    run_master(masters, kube_cluster, ovn_central, workdir)
    a, b, ip = two_nodes(kobj, ovn_central)
    ns = kobj.namespace("svc")
    P = f"Service_{ns}/"
    web = kobj.svc(ns, service("web", type="NodePort", ports=[
        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}]))
    cip = web["spec"]["clusterIP"]
    np = {p["name"]: p["nodePort"] for p in web["spec"]["ports"]}
    assert all(30000 <= n <= 32767 for n in np.values())  # the apiserver's NodePort range
    kobj.svc(ns, service("other"))
    kobj.svc(ns, service("headless", clusterIP="None"))
    kobj.svc(ns, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "extname"},
                  "spec": {"type": "ExternalName", "externalName": "example.com"}})
    names = {f"{P}web_TCP_cluster", f"{P}web_UDP_cluster", f"{P}other_TCP_cluster",
             *(f"{P}web_{proto}_node_{kind}_{n}" for proto in ("TCP", "UDP") for n in (a, b)
               for kind in ("router", "switch"))}

    # 1. A Service with no endpoints: every VIP there, rejecting.
    rows = eventually(lambda: (r := lbs(ovn_central, P)) and set(r) == names and r,
                      what="LBs of the new services")
    assert rows[f"{P}web_TCP_cluster"]["vips"] == {f"{cip}:80": ""}
    assert rows[f"{P}web_UDP_cluster"]["vips"] == {f"{cip}:53": ""}
    assert rows[f"{P}web_UDP_cluster"]["protocol"] == "udp"
    assert rows[f"{P}web_TCP_node_router_{a}"]["vips"] == {f"{ip[a]}:{np['http']}": "",
                                                          f"{MASQ}:{np['http']}": ""}
    # Pods reach their own node's NodePorts at their node switch.
    assert rows[f"{P}web_TCP_node_switch_{a}"]["vips"] == {f"{ip[a]}:{np['http']}": ""}
    for r in rows.values():
        assert r["options"]["reject"] == "true" and r["options"]["event"] == "false"
        ext = r["external_ids"]
        assert ext["k8s.ovn.org/kind"] == "Service"
        assert ext["k8s.ovn.org/owner-type"] == "Service"
        assert ext["k8s.ovn.org/owner"] in (f"{ns}/web", f"{ns}/other")
    group = lb_refs(ovn_central, "Load_Balancer_Group", "clusterLBGroup")
    assert {rows[f"{P}web_TCP_cluster"]["_uuid"], rows[f"{P}web_UDP_cluster"]["_uuid"]} <= group
    assert rows[f"{P}web_TCP_node_router_{a}"]["_uuid"] in lb_refs(
        ovn_central, "Logical_Router", f"GR_{a}")
    assert rows[f"{P}web_TCP_node_router_{a}"]["_uuid"] not in lb_refs(
        ovn_central, "Logical_Router", f"GR_{b}")
    # Headless and ExternalName services make nothing.
    assert not [n for n in rows if "headless" in n or "extname" in n]

    # 2. Endpoints arrive: one slice per port (each resolves its own target port).
    before = lbs(ovn_central, P)
    mark = settle(ovn_central)
    kobj.slice(ns, endpoint_slice("web-tcp", "web", "http", 8080, "TCP",
                                  [("10.244.1.5", a, True), ("10.244.2.5", b, True)]))
    want_tcp = "10.244.1.5:8080,10.244.2.5:8080"
    eventually(lambda: lbs(ovn_central, P)[f"{P}web_TCP_cluster"]["vips"] == {
        f"{cip}:80": want_tcp}, what="TCP endpoints programmed")
    settle(ovn_central)
    rows = lbs(ovn_central, P)
    assert rows[f"{P}web_TCP_node_router_{b}"]["vips"] == {f"{ip[b]}:{np['http']}": want_tcp,
                                                          f"{MASQ}:{np['http']}": want_tcp}
    tcp = {f"{P}web_TCP_cluster", *(f"{P}web_TCP_node_{kind}_{n}" for n in (a, b)
                                    for kind in ("router", "switch"))}
    # One transaction, only the TCP load balancers; every row updated in place.
    assert lb_writes(ovn_central, mark) == [tcp]
    assert {n: r["_uuid"] for n, r in rows.items()} == {n: r["_uuid"] for n, r in before.items()}

    # 3. Endpoint churn on the UDP port only: only the UDP load balancers change.
    kobj.slice(ns, endpoint_slice("web-udp", "web", "dns", 5353, "UDP",
                                  [("10.244.1.6", a, True)]))
    eventually(lambda: lbs(ovn_central, P)[f"{P}web_UDP_cluster"]["vips"] == {
        f"{cip}:53": "10.244.1.6:5353"}, what="UDP endpoint programmed")
    mark = settle(ovn_central)
    kobj.replace_slice(ns, endpoint_slice("web-udp", "web", "dns", 5353, "UDP",
                                          [("10.244.1.6", a, False), ("10.244.2.6", b, True)]))
    eventually(lambda: lbs(ovn_central, P)[f"{P}web_UDP_cluster"]["vips"] == {
        f"{cip}:53": "10.244.2.6:5353"}, what="not-ready endpoint dropped")
    settle(ovn_central)
    udp = {f"{P}web_UDP_cluster", *(f"{P}web_UDP_node_{kind}_{n}" for n in (a, b)
                                    for kind in ("router", "switch"))}
    assert lb_writes(ovn_central, mark) == [udp]

    # 4. A Service edit (the TCP port's number): only the TCP cluster LB changes;
    # the NodePort LBs map node IP:nodePort, which stay the same.
    mark = settle(ovn_central)
    kobj.patch_svc(ns, "web", [{"op": "replace", "path": "/spec/ports/0/port", "value": 8000}])
    eventually(lambda: lbs(ovn_central, P)[f"{P}web_TCP_cluster"]["vips"] == {
        f"{cip}:8000": want_tcp}, what="port edit programmed")
    settle(ovn_central)
    assert lb_writes(ovn_central, mark) == [{f"{P}web_TCP_cluster"}]

    # 5. Affinity: an option on every load balancer of the Service, one transaction.
    mark = settle(ovn_central)
    kobj.patch_svc(ns, "web", {"spec": {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {
        "clientIP": {"timeoutSeconds": 60}}}})
    eventually(lambda: all(r["options"].get("affinity_timeout") == "60"
                           for n, r in lbs(ovn_central, f"{P}web_").items()),
               what="affinity programmed")
    settle(ovn_central)
    assert lb_writes(ovn_central, mark) == [tcp | udp]
    assert lbs(ovn_central, P)[f"{P}other_TCP_cluster"] == before[f"{P}other_TCP_cluster"]

    # 6. NodePort -> ClusterIP: the per-node load balancers go, the rest stay.
    mark = settle(ovn_central)
    kobj.patch_svc(ns, "web", [{"op": "replace", "path": "/spec/type", "value": "ClusterIP"},
                               {"op": "remove", "path": "/spec/ports/0/nodePort"},
                               {"op": "remove", "path": "/spec/ports/1/nodePort"}])
    eventually(lambda: set(lbs(ovn_central, f"{P}web_")) == {
        f"{P}web_TCP_cluster", f"{P}web_UDP_cluster"}, what="per-node LBs removed")
    settle(ovn_central)
    (written,) = lb_writes(ovn_central, mark)
    assert written == {n for n in tcp | udp if "_node_" in n}
    assert lbs(ovn_central, P)[f"{P}web_TCP_cluster"]["_uuid"] == before[
        f"{P}web_TCP_cluster"]["_uuid"]

    # 7. Delete: its load balancers and their group membership go; others stay.
    kobj.core.delete_namespaced_service("web", ns)
    eventually(lambda: set(lbs(ovn_central, P)) == {f"{P}other_TCP_cluster"},
               what="LBs of the deleted service gone")
    group = lb_refs(ovn_central, "Load_Balancer_Group", "clusterLBGroup")
    assert before[f"{P}web_TCP_cluster"]["_uuid"] not in group
    assert before[f"{P}other_TCP_cluster"]["_uuid"] in group


def test_etp_local_itp_local_and_late_gateway(kube_cluster: KubeControlPlane,
                                              ovn_central: OvnCentral, kobj: Objects,
                                              masters: DaemonSet, workdir: Path) -> None:
    run_master(masters, kube_cluster, ovn_central, workdir)
    a, b, ip = two_nodes(kobj, ovn_central)
    # A third node reports its gateway address but not yet its chassis: no GR.
    c = kobj.node("sc", chassis=False, gateway_ip="172.18.0.23")
    ns = kobj.namespace("loc")
    P = f"Service_{ns}/"
    s = kobj.svc(ns, service("etp", type="LoadBalancer", externalTrafficPolicy="Local",
                             externalIPs=["192.0.2.7"]))
    kobj.svc(ns, service("itp", internalTrafficPolicy="Local"))
    for svc in ("etp", "itp"):
        kobj.slice(ns, endpoint_slice(svc, svc, "http", 8080, "TCP",
                                      [("10.244.1.5", a, True), ("10.244.2.5", b, True)]))
    np = s["spec"]["ports"][0]["nodePort"]
    cip = s["spec"]["clusterIP"]

    def programmed() -> dict[str, dict[str, Any]] | None:
        # Every row asserted below, with its backends: both Services and both
        # slices arrive separately, so a row can exist before its endpoints.
        r = lbs(ovn_central, P)
        want = [f"{P}etp_TCP_node_router_{a}", f"{P}etp_TCP_node_router_{b}",
                f"{P}etp_TCP_node_switch_{a}", f"{P}etp_TCP_cluster",
                f"{P}itp_TCP_node_switch_{b}"]
        if not all(n in r and all(r[n]["vips"].values()) and r[n]["vips"] for n in want):
            return None
        return r if r[f"{P}etp_TCP_node_router_{b}"]["vips"].get(f"{ip[b]}:{np}") else None

    rows = eventually(programmed, what="ETP/ITP local LBs with their backends")
    ra = rows[f"{P}etp_TCP_node_router_{a}"]
    assert ra["vips"] == {f"{ip[a]}:{np}": "10.244.1.5:8080", f"{MASQ}:{np}": "10.244.1.5:8080",
                          "192.0.2.7:80": "10.244.1.5:8080"}
    assert ra["options"]["skip_snat"] == "true"
    assert rows[f"{P}etp_TCP_node_switch_{a}"]["vips"] == {
        "192.0.2.7:80": "10.244.1.5:8080,10.244.2.5:8080",
        f"{ip[a]}:{np}": "10.244.1.5:8080,10.244.2.5:8080"}
    assert rows[f"{P}etp_TCP_cluster"]["vips"] == {f"{cip}:80": "10.244.1.5:8080,10.244.2.5:8080"}
    assert rows[f"{P}itp_TCP_node_switch_{b}"]["vips"] == {
        f"{next(iter(rows[f'{P}itp_TCP_node_switch_{b}']['vips']))}": "10.244.2.5:8080"}
    assert rows[f"{P}itp_TCP_node_switch_{b}"]["_uuid"] in lb_refs(
        ovn_central, "Logical_Switch", b)
    assert f"{P}itp_TCP_cluster" not in rows
    assert not [n for n in rows if n.endswith(c)]

    # The third node's chassis appears (its gateway addresses are unchanged):
    # its gateway router is made, and the services' load balancers follow.
    patch_annotations(kobj.api, node_path(c), {NODE_CHASSIS_ID: f"chassis-{c}"})
    rows = eventually(lambda: (r := lbs(ovn_central, P)) and f"{P}etp_TCP_node_router_{c}" in r
                      and r, timeout=30, what="LB on the late gateway router")
    assert rows[f"{P}etp_TCP_node_router_{c}"]["vips"] == {"172.18.0.23:" + str(np): "",
                                                          f"{MASQ}:{np}": "",
                                                          "192.0.2.7:80": ""}
    assert rows[f"{P}etp_TCP_node_router_{c}"]["_uuid"] in lb_refs(
        ovn_central, "Logical_Router", f"GR_{c}")

    # The node goes: its per-node load balancers go with it.
    kobj.core.delete_node(c)
    eventually(lambda: not [n for n in lbs(ovn_central, P) if n.endswith(c)], timeout=30,
               what="per-node LBs of a deleted node removed")


def test_master_restart_resyncs_without_touching_unchanged(
        kube_cluster: KubeControlPlane, ovn_central: OvnCentral, kobj: Objects,
        masters: DaemonSet, workdir: Path) -> None:
    no_leftovers(kobj)
    m1 = run_master(masters, kube_cluster, ovn_central, workdir, "m1")
    a, b, _ = two_nodes(kobj, ovn_central)
    ns = kobj.namespace("rs")
    P = f"Service_{ns}/"
    for i in range(6):
        kobj.svc(ns, service(f"s{i}", type="NodePort" if i % 2 else "ClusterIP"))
        kobj.slice(ns, endpoint_slice(f"s{i}", f"s{i}", "http", 8080, "TCP",
                                      [(f"10.244.1.{10 + i}", a, True),
                                       (f"10.244.2.{10 + i}", b, True)]))
    # A cluster LB each; per node, a router LB and a switch LB for the NodePorts.
    expected = 6 + 3 * 2 * 2
    eventually(lambda: len(lbs(ovn_central, P)) == expected and all(
        v for r in lbs(ovn_central, P).values() for v in r["vips"].values()),
        what="all LBs with endpoints")
    settle(ovn_central)
    before = lbs(ovn_central, P)

    # A restart with nothing changed writes nothing at all.
    os.killpg(m1.pid, signal.SIGKILL)
    m1.proc.wait()  # type: ignore[union-attr]
    mark = log_mark(ovn_central)
    m2 = run_master(masters, kube_cluster, ovn_central, workdir, "m2")
    settle(ovn_central, quiet=3)
    assert ours(nb_log(ovn_central), mark) == []
    assert lbs(ovn_central, P) == before

    # While the master is down: a Service deleted, an endpoint changed, one added.
    os.killpg(m2.pid, signal.SIGKILL)
    m2.proc.wait()  # type: ignore[union-attr]
    kobj.core.delete_namespaced_service("s0", ns)
    kobj.replace_slice(ns, endpoint_slice("s1", "s1", "http", 8080, "TCP",
                                          [("10.244.1.11", a, True)]))
    kobj.svc(ns, service("s6"))
    mark = log_mark(ovn_central)
    run_master(masters, kube_cluster, ovn_central, workdir, "m3")
    changed = {f"{P}s1_TCP_cluster", *(f"{P}s1_TCP_node_{kind}_{n}" for n in (a, b)
                                       for kind in ("router", "switch"))}
    eventually(lambda: f"{P}s6_TCP_cluster" in lbs(ovn_central, P), what="new service's LB")
    settle(ovn_central, quiet=3)
    after = lbs(ovn_central, P)
    assert f"{P}s0_TCP_cluster" not in after
    assert after[f"{P}s1_TCP_cluster"]["vips"] == {
        next(iter(before[f"{P}s1_TCP_cluster"]["vips"])): "10.244.1.11:8080"}
    # Exactly the rows that differ were written, in the start-up sync's one
    # transaction; everything else kept its row and was not written to.
    writes = lb_writes(ovn_central, mark)
    assert writes == [changed | {f"{P}s0_TCP_cluster", f"{P}s6_TCP_cluster"}]
    for name, row in before.items():
        if name in changed:
            assert after[name]["_uuid"] == row["_uuid"]
        elif name != f"{P}s0_TCP_cluster":
            assert after[name] == row, name
