"""NetworkPolicy against a real kube-apiserver, a real NB and `ovnkube master`
as a process: port groups, ACLs and address sets appear as ovn-kubernetes lays
them out, every change is one transaction touching only what it affects, a
restart with nothing changed writes nothing, and ACL logging follows the
namespace annotation (a bad value gets an Event and changes nothing)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from localcluster.kube import KubeControlPlane
from localcluster.ovn import OvnCentral
from localcluster.procs import DaemonSet
from ovnkube import names
from ovnkube.master.translate.netpol_model import PeerSelector
from ovnkube.master.translate.selectors import Selector
from tests.master_helpers import KubeObjects, eventually, run_master
from tests.nblog import nb_log, nb_table, ours, settle


class Objects(KubeObjects):
    def __init__(self, cp: KubeControlPlane) -> None:
        super().__init__(cp)
        self.net = client.NetworkingV1Api(self.api)

    def namespace(self, prefix: str = "t", labels: dict[str, str] | None = None) -> str:
        ns = f"{prefix}-{self.suffix}"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
            name=ns, labels=labels)))
        self.namespaces.append(ns)
        return ns

    def labeled_pod(self, ns: str, name: str, node: str, labels: dict[str, str],
                    ports: dict[str, int] | None = None) -> None:
        self.core.create_namespaced_pod(ns, client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels=labels),
            spec=client.V1PodSpec(node_name=node, automount_service_account_token=False,
                                  containers=[client.V1Container(
                                      name="c", image="pause",
                                      ports=[client.V1ContainerPort(name=n, container_port=p)
                                             for n, p in (ports or {}).items()])])))

    def policy(self, ns: str, name: str, spec: dict[str, Any]) -> None:
        self.net.create_namespaced_network_policy(ns, {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name}, "spec": spec})

    def pod_ip(self, ns: str, name: str) -> str:
        from ovnkube.annotations import POD_NETWORKS, PodNetwork
        pod = self.core.read_namespaced_pod(name, ns)
        raw = (pod.metadata.annotations or {}).get(POD_NETWORKS)
        assert raw, f"pod {ns}/{name} has no address yet"
        return str(PodNetwork.parse(raw).ip_addresses[0].ip)


@pytest.fixture
def kobj(kube_cluster: KubeControlPlane) -> Iterator[Objects]:
    k = Objects(kube_cluster)
    try:
        yield k
    finally:
        k.cleanup()


# --- reading what the master wrote ------------------------------------------------

def port_groups(central: OvnCentral) -> dict[str, set[str]]:
    """Port group name -> the names of its ports."""
    lsp = {r["_uuid"]: r["name"] for r in nb_table(central, "Logical_Switch_Port", "_uuid,name")}
    out = {}
    for r in nb_table(central, "Port_Group", "name,ports"):
        ports = r["ports"] if isinstance(r["ports"], list) else [r["ports"]]
        out[r["name"]] = {lsp[u] for u in ports}
    return out


def address_sets(central: OvnCentral) -> dict[str, set[str]]:
    out = {}
    for r in nb_table(central, "Address_Set", "name,addresses"):
        a = r["addresses"]
        out[r["name"]] = set(a if isinstance(a, list) else [a]) - {""}
    return out


def acls(central: OvnCentral, name_prefix: str) -> dict[str, dict[str, Any]]:
    """ACL name -> its columns, for our NetworkPolicy ACLs of one namespace."""
    rows = nb_table(central, "ACL", "name,direction,priority,match,action,log,severity,meter,"
                    "options")
    return {r["name"]: r for r in rows
            if isinstance(r["name"], str) and r["name"].startswith(name_prefix)}


def as_name(ns: str | None, pod_sel: dict[str, Any], ns_sel: dict[str, Any] | None = None
            ) -> str:
    peer = PeerSelector(Selector.parse(pod_sel), namespace=ns,
                        ns_selector=Selector.parse(ns_sel) if ns_sel is not None else None)
    return names.address_set_name(peer.id, 4)


def np_writes(central: OvnCentral, since: int) -> list[list[tuple[str, str, str]]]:
    """For each of the master's transactions since `since` that wrote policy
    rows, those rows (table, name, op). Other tests' namespaces may still be
    going away meanwhile: their pods' and Services' rows are not counted."""
    out = []
    for t in ours(nb_log(central), since):
        rows = [r for r in t.rows if r[0] in ("Port_Group", "Address_Set")
                or (r[0] == "ACL" and r[1].startswith("NP:"))]
        if rows:
            out.append(rows)
    return out


def pods_with_ports(central: OvnCentral, *names: str) -> None:
    have = set(central.nbctl("--bare", "--columns=name", "list", "Logical_Switch_Port").split())
    assert set(names) <= have, f"ports {set(names) - have} not in the NB"


# --- tests ---------------------------------------------------------------------------

def test_policy_objects_and_one_transaction_per_change(
        kube_cluster: KubeControlPlane, ovn_central: OvnCentral, kobj: Objects,
        masters: DaemonSet, workdir: Path) -> None:
    master = run_master(masters, kube_cluster, ovn_central, workdir)
    node = kobj.node("np")
    x = kobj.namespace("x", {"team": "x"})
    y = kobj.namespace("y", {"team": "y"})
    kobj.labeled_pod(x, "a", node, {"pod": "a"}, {"http": 8080})
    kobj.labeled_pod(x, "b", node, {"pod": "b"}, {"http": 9090})
    kobj.labeled_pod(x, "c", node, {"pod": "c"})
    kobj.labeled_pod(y, "b", node, {"pod": "b"})
    eventually(lambda: pods_with_ports(ovn_central, f"{x}_a", f"{x}_b", f"{x}_c", f"{y}_b")
               or True, timeout=60, what="pod ports")
    ip = {k: kobj.pod_ip(*k.split("/")) for k in (f"{x}/a", f"{x}/b", f"{x}/c", f"{y}/b")}

    # Pods a and b of x accept TCP on their "http" port (8080 on a, 9090 on
    # b) from pods "b" of x and from any pod of a team=y namespace; egress
    # from them only to 10.0.0.0/8 except 10.1.0.0/16.
    kobj.policy(x, "web", {
        "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In",
                                              "values": ["a", "b"]}]},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}},
                              {"namespaceSelector": {"matchLabels": {"team": "y"}}}],
                     "ports": [{"port": "http"}]}],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}]})
    pg = names.policy_pg_name(x, "web")
    deny_in, deny_eg = names.deny_pg_name(x, "Ingress"), names.deny_pg_name(x, "Egress")
    as_b = as_name(x, {"matchLabels": {"pod": "b"}})
    as_y = as_name(None, {}, {"matchLabels": {"team": "y"}})

    def converged() -> bool:
        pgs, ases = port_groups(ovn_central), address_sets(ovn_central)
        return (pgs.get(pg) == {f"{x}_a", f"{x}_b"} and pgs.get(deny_in) == pgs.get(pg)
                and pgs.get(deny_eg) == pgs.get(pg) and ases.get(as_b) == {ip[f"{x}/b"]}
                and ases.get(as_y) == {ip[f"{y}/b"]})
    eventually(converged, timeout=30, what="policy port groups and address sets")
    got = acls(ovn_central, f"NP:{x}:")
    assert got[f"NP:{x}:Ingress"]["action"] == "drop"
    assert got[f"NP:{x}:Ingress"]["priority"] == 1000
    assert got[f"NP:{x}:Egress"]["options"] == {"apply-after-lb": "true"}
    ing = got[f"NP:{x}:web:Ingress:0"]
    assert (ing["direction"], ing["priority"], ing["action"]) == ("to-lport", 1001,
                                                                  "allow-related")
    assert f"outport == @{pg}" in ing["match"]
    assert f"${as_b}" in ing["match"] and f"${as_y}" in ing["match"]
    # the named port, resolved per pod
    assert f"ip4.dst == {ip[f'{x}/a']} && tcp && tcp.dst == 8080" in ing["match"]
    assert f"ip4.dst == {ip[f'{x}/b']} && tcp && tcp.dst == 9090" in ing["match"]
    eg = got[f"NP:{x}:web:Egress:0"]
    assert eg["direction"] == "from-lport" and eg["options"] == {"apply-after-lb": "true"}
    assert eg["match"] == (f"inport == @{pg} && ip4.dst == 10.0.0.0/8 && "
                           "ip4.dst != 10.1.0.0/16")

    # 1. A label change that no selector cares about writes nothing (team=y
    # takes every pod of y); one that takes x/b out of the policy is one
    # transaction: the address set of "b" peers, the port groups, the ACL
    # whose named-port clause named x/b.
    mark = settle(ovn_central)
    kobj.core.patch_namespaced_pod("b", y, {"metadata": {"labels": {"pod": "z"}}})
    after = settle(ovn_central)
    assert np_writes(ovn_central, mark) == []
    assert address_sets(ovn_central)[as_y] == {ip[f"{y}/b"]}

    mark = after
    kobj.core.patch_namespaced_pod("b", x, {"metadata": {"labels": {"pod": "zz"}}})
    eventually(lambda: port_groups(ovn_central)[pg] == {f"{x}_a"}, timeout=20,
               what="x/b out of the policy")
    settle(ovn_central)
    txns = np_writes(ovn_central, mark)
    assert len(txns) == 1, txns
    touched = {(t, n) for t, n, _ in txns[0]}
    assert ("Address_Set", as_b) in touched  # x/b no longer a "b" peer
    assert {t for t, _ in touched} <= {"Address_Set", "Port_Group", "ACL"}
    assert address_sets(ovn_central)[as_b] == set()
    assert port_groups(ovn_central)[deny_in] == {f"{x}_a"}

    # 2. A namespace label change: one transaction, one address set.
    mark = settle(ovn_central)
    kobj.core.patch_namespace(y, {"metadata": {"labels": {"team": "other"}}})
    eventually(lambda: address_sets(ovn_central)[as_y] == set(), timeout=20,
               what="y's pods out of the team=y address set")
    settle(ovn_central)
    txns = np_writes(ovn_central, mark)
    assert len(txns) == 1 and {t for t, _, _ in txns[0]} == {"Address_Set"}, \
        txns

    # 3. A policy update (its ingress port) rewrites that one ACL, nothing else.
    mark = settle(ovn_central)
    kobj.net.patch_namespaced_network_policy("web", x, {"spec": {"ingress": [{
        "from": [{"podSelector": {"matchLabels": {"pod": "b"}}},
                 {"namespaceSelector": {"matchLabels": {"team": "y"}}}],
        "ports": [{"port": 8443}]}]}})
    eventually(lambda: "tcp.dst == 8443" in acls(ovn_central, f"NP:{x}:")[
        f"NP:{x}:web:Ingress:0"]["match"], timeout=20, what="updated ingress ACL")
    settle(ovn_central)
    txns = np_writes(ovn_central, mark)
    assert len(txns) == 1 and {(t, op) for t, _, op in txns[0]} == {("ACL", "update")}, \
        txns

    # 4. A pod recreated under its name, now with another number for its named
    # port (and the address it is given): the named-port clause follows.
    kobj.net.patch_namespaced_network_policy("web", x, {"spec": {"ingress": [{
        "ports": [{"port": "http"}]}]}})
    kobj.delete_pod(x, "a")
    eventually(lambda: f"{x}_a" not in port_groups(ovn_central)[pg], timeout=30,
               what="x/a gone from the policy")
    kobj.labeled_pod(x, "a", node, {"pod": "a"}, {"http": 7070})
    eventually(lambda: pods_with_ports(ovn_central, f"{x}_a") or True, timeout=30,
               what="new x/a port")
    new_ip = eventually(lambda: kobj.pod_ip(x, "a"), timeout=30, what="new x/a address")

    def follows() -> bool:
        m = acls(ovn_central, f"NP:{x}:")[f"NP:{x}:web:Ingress:0"]["match"]
        return (f"ip4.dst == {new_ip} && tcp && tcp.dst == 7070" in m
                and port_groups(ovn_central)[pg] == {f"{x}_a"})
    eventually(follows, timeout=30, what="named port and port group follow the new pod")

    # 5. A restart with nothing changed writes nothing.
    mark = settle(ovn_central)
    master.stop()
    masters.daemons.remove(master)
    run_master(masters, kube_cluster, ovn_central, workdir, "master-2")
    settle(ovn_central, quiet=3)
    assert np_writes(ovn_central, mark) == []

    # 6. Deleting the policy removes its rows, the namespace's default deny
    # and the address sets nothing else uses, in one transaction.
    mark = settle(ovn_central)
    kobj.net.delete_namespaced_network_policy("web", x)
    eventually(lambda: not {pg, deny_in, deny_eg} & set(port_groups(ovn_central)),
               timeout=20, what="policy port groups gone")
    settle(ovn_central)
    assert not {as_b, as_y} & set(address_sets(ovn_central))
    assert acls(ovn_central, f"NP:{x}:") == {}
    assert len(np_writes(ovn_central, mark)) == 1


def test_acl_logging_annotation(kube_cluster: KubeControlPlane, ovn_central: OvnCentral,
                                kobj: Objects, masters: DaemonSet, workdir: Path) -> None:
    run_master(masters, kube_cluster, ovn_central, workdir)
    node = kobj.node("lg")
    ns = kobj.namespace("lg")
    kobj.labeled_pod(ns, "a", node, {"pod": "a"})
    kobj.policy(ns, "deny-all", {"podSelector": {}, "policyTypes": ["Ingress"]})
    kobj.policy(ns, "allow-a", {"podSelector": {}, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}]})
    eventually(lambda: f"NP:{ns}:allow-a:Ingress:0" in acls(ovn_central, f"NP:{ns}:"),
               timeout=30, what="policy ACLs")
    meter = nb_table(ovn_central, "Meter", "name,unit,fair")
    assert {"name": "acl-logging", "unit": "pktps", "fair": True} in meter

    kobj.core.patch_namespace(ns, {"metadata": {"annotations": {
        "k8s.ovn.org/acl-logging": json.dumps({"deny": "alert", "allow": "notice"})}}})

    def logged() -> bool:
        got = acls(ovn_central, f"NP:{ns}:")
        deny, allow = got[f"NP:{ns}:Ingress"], got[f"NP:{ns}:allow-a:Ingress:0"]
        return (deny["log"] is True and deny["severity"] == "alert"
                and deny["meter"] == "acl-logging" and allow["log"] is True
                and allow["severity"] == "notice")
    eventually(logged, timeout=20, what="ACL logging on")

    # A bad value: an Event naming it, and the ACLs keep their logging.
    mark = settle(ovn_central)
    kobj.core.patch_namespace(ns, {"metadata": {"annotations": {
        "k8s.ovn.org/acl-logging": json.dumps({"deny": "loud"})}}})

    def event() -> list[str]:
        evs = kobj.core.list_namespaced_event("default", field_selector=(
            f"involvedObject.name={ns},involvedObject.kind=Namespace")).items
        return [e.message for e in evs if e.reason == "InvalidACLLogging"]
    msgs = eventually(event, timeout=20, what="InvalidACLLogging event")
    assert "'loud'" in msgs[0]
    settle(ovn_central)
    assert np_writes(ovn_central, mark) == []
    assert logged()

    # Removing the annotation turns logging off again.
    kobj.core.patch_namespace(ns, {"metadata": {"annotations": {
        "k8s.ovn.org/acl-logging": None}}})
    eventually(lambda: acls(ovn_central, f"NP:{ns}:")[f"NP:{ns}:Ingress"]["log"] is False,
               timeout=20, what="ACL logging off")
