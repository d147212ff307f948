"""bench_netpol's workload: the namespaces, pods and policies it creates (as
API object bodies) and what the NB must hold for them."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ovnkube import names  # noqa: E402
from ovnkube.annotations import NODE_CHASSIS_ID  # noqa: E402
from ovnkube.master.translate import netpol  # noqa: E402
from ovnkube.master.translate.netpol_model import PeerSelector  # noqa: E402
from ovnkube.master.translate.selectors import Selector  # noqa: E402

Obj = dict[str, Any]


def matches(sel: Obj, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels, matchExpressions with In) on labels."""
    if any(labels.get(k) != v for k, v in (sel.get("matchLabels") or {}).items()):
        return False
    for e in sel.get("matchExpressions") or []:
        assert e["operator"] == "In", e
        if labels.get(e["key"]) not in e["values"]:
            return False
    return True


def pod_labels(j: int) -> dict[str, str]:
    return {"app": str(j % 10), "role": str(j % 2)}


def http_port(j: int) -> int:
    """The number behind the container port named "http" (two per namespace)."""
    return 8080 + j % 2


def policy_specs(n_policies: int) -> list[tuple[str, Obj]]:
    """The policies of one namespace: (name, spec)."""
    out: list[tuple[str, Obj]] = []
    for k in range(n_policies):
        if k == 0:  # egress: an ipBlock with an except, and in-namespace peers
            out.append(("egress-ipblock", {
                "podSelector": {"matchLabels": {"role": "0"}}, "policyTypes": ["Egress"],
                "egress": [
                    {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                     "ports": [{"protocol": "TCP", "port": 443}]},
                    {"to": [{"podSelector": {"matchLabels": {"role": "1"}}}],
                     "ports": [{"protocol": "UDP", "port": 53}]}]}))
        elif k % 3 == 1:  # podSelector peers, a port by number
            out.append((f"pods-{k}", {
                "podSelector": {"matchLabels": {"app": str(k % 10)}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "1"}}}],
                             "ports": [{"protocol": "TCP", "port": 8080}]}]}))
        elif k % 3 == 2:  # namespaceSelector + podSelector peers, a port by name
            out.append((f"nsel-{k}", {
                "podSelector": {"matchLabels": {"app": str(k % 10)}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{
                    "namespaceSelector": {"matchLabels": {"team": str(k % 5)}},
                    "podSelector": {"matchLabels": {"app": str((k + 1) % 10)}}}],
                    "ports": [{"port": "http"}]}]}))
        else:  # two rules: mixed peers, a named and a numbered port; all pods of the ns
            out.append((f"mixed-{k}", {
                "podSelector": {"matchExpressions": [{
                    "key": "app", "operator": "In", "values": [str(k % 10), str((k + 5) % 10)]}]},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"from": [{"podSelector": {"matchLabels": {"app": str((k + 3) % 10)}}},
                              {"namespaceSelector": {"matchLabels": {"team": str(k % 5)}}}],
                     "ports": [{"port": "http"}, {"protocol": "TCP", "port": 9090}]},
                    {"from": [{"podSelector": {}}]}]}))
    return out


@dataclass
class Workload:
    namespaces: int
    policies: int
    pods: int
    nodes: int

    def ns_names(self) -> list[str]:
        return [f"np{i}" for i in range(self.namespaces)]

    def node_names(self) -> list[str]:
        return [f"node{i}" for i in range(self.nodes)]

    def ns_labels(self, i: int) -> dict[str, str]:
        return {"team": str(i % 5)}

    def node_of(self, i: int, j: int) -> str:
        return f"node{(i * self.pods + j) % self.nodes}"

    def node_body(self, n: str) -> Obj:
        """A Node with the chassis annotation a node agent would set."""
        return {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": n, "annotations": {NODE_CHASSIS_ID: f"chassis-{n}"}}}

    def ns_body(self, i: int, ns: str) -> Obj:
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": ns, "labels": self.ns_labels(i)}}

    def ns_objects(self) -> list[tuple[str, str, Obj]]:
        """(namespace, resource, body) of every pod and policy, namespace by namespace."""
        objs: list[tuple[str, str, Obj]] = []
        for i, ns in enumerate(self.ns_names()):
            for j in range(self.pods):
                objs.append((ns, "pods", {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": f"p{j}", "labels": pod_labels(j)},
                    "spec": {"nodeName": self.node_of(i, j), "automountServiceAccountToken": False,
                             "containers": [{"name": "c", "image": "pause", "ports": [
                                 {"name": "http", "containerPort": http_port(j)}]}]}}))
            for name, spec in policy_specs(self.policies):
                objs.append((ns, "networkpolicies", {
                    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": name}, "spec": spec}))
        return objs


def serviceaccount_body() -> Obj:
    """The namespace's "default" service account (no controller-manager makes it)."""
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}


@dataclass
class Expected:
    """What the NB must hold once the master has caught up."""

    #: port group name -> its ports (LSP names)
    port_groups: dict[str, frozenset[str]] = field(default_factory=dict)
    #: address set name -> the pods (ns/name) whose IPs it holds
    address_sets: dict[str, frozenset[str]] = field(default_factory=dict)
    #: owner type -> number of ACL rows
    acls: dict[str, int] = field(default_factory=dict)
    policies: int = 0


def peer_set_name(ns: str, peer: Obj) -> str:
    pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
    sel = PeerSelector(Selector.parse(pod_sel or {}),
                       namespace=ns if ns_sel is None else None,
                       ns_selector=Selector.parse(ns_sel) if ns_sel is not None else None)
    return names.address_set_name(sel.id, 4)


def expected(w: Workload, labels: dict[str, dict[str, str]]) -> Expected:
    """`labels`: pod key (ns/name) -> its labels now."""
    ex = Expected(acls={netpol.POLICY_OWNER: 0, netpol.NAMESPACE_OWNER: 0})
    ns_labels = {ns: w.ns_labels(i) for i, ns in enumerate(w.ns_names())}
    by_ns: dict[str, list[str]] = {ns: [] for ns in ns_labels}
    for key in labels:
        by_ns[key.split("/")[0]].append(key)
    specs = policy_specs(w.policies)
    for ns in ns_labels:
        deny: dict[str, set[str]] = {"Ingress": set(), "Egress": set()}
        for name, spec in specs:
            ex.policies += 1
            chosen = [k for k in by_ns[ns] if matches(spec["podSelector"], labels[k])]
            ports = frozenset(names.pod_port(ns, k.split("/")[1]) for k in chosen)
            ex.port_groups[names.policy_pg_name(ns, name)] = ports
            for direction in spec["policyTypes"]:
                deny[direction] |= ports
                field_, peers_ = ("from", "ingress") if direction == "Ingress" else \
                    ("to", "egress")
                for rule in spec[peers_]:
                    named_only = all(isinstance(p.get("port"), str) for p in rule["ports"]) \
                        if rule.get("ports") else False
                    # a rule whose only ports are names none of its pods has admits nothing
                    if not (named_only and direction == "Ingress" and not chosen):
                        ex.acls[netpol.POLICY_OWNER] += 1
                    for peer in rule.get(field_) or []:
                        if "ipBlock" in peer:
                            continue
                        aset = peer_set_name(ns, peer)
                        if aset in ex.address_sets:  # shared by several rules
                            continue
                        nsel = peer.get("namespaceSelector")
                        nss = [ns] if nsel is None else \
                            [n for n, lb in ns_labels.items() if matches(nsel, lb)]
                        ex.address_sets[aset] = frozenset(
                            k for n in nss for k in by_ns[n]
                            if matches(peer.get("podSelector") or {}, labels[k]))
        if specs:
            for direction, pg_ports in deny.items():
                ex.port_groups[names.deny_pg_name(ns, direction)] = frozenset(pg_ports)
            ex.acls[netpol.NAMESPACE_OWNER] += 6  # drop, ARP/ND, hairpin per direction
    return ex
