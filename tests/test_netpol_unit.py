"""NetworkPolicy translation with plain data: selectors, policy parsing, and
the port groups, ACLs and address sets each case of networking.k8s.io/v1
becomes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from northd_sync.rows import ACL, AddressSet, PortGroup, Row
from ovnkube import names
from ovnkube.master.translate import netpol
from ovnkube.master.translate.netpol_model import (
    AclLogging,
    PeerSelector,
    PodFact,
    Policy,
    PolicyError,
)
from ovnkube.master.translate.selectors import Selector, SelectorError


def pol(spec: dict[str, Any], ns: str = "x", name: str = "p") -> Policy:
    return Policy.parse({"metadata": {"namespace": ns, "name": name}, "spec": spec})


def pod(name: str, ip: str, ns: str = "x", ports: tuple[tuple[str, str, int], ...] = (),
        **labels: str) -> PodFact:
    return PodFact(ns, name, labels, (ip,), ports)


def acls(rows: list[Row]) -> list[ACL]:
    return [r for r in rows if isinstance(r, ACL)]


def only_acl(rows: list[Row]) -> ACL:
    (a,) = acls(rows)
    return a


def as_of(ns: str | None, pod_sel: dict[str, Any] | None = None,
          ns_sel: dict[str, Any] | None = None) -> str:
    peer = PeerSelector(Selector.parse(pod_sel or {}), namespace=ns,
                        ns_selector=None if ns_sel is None else Selector.parse(ns_sel))
    return "$" + names.address_set_name(peer.id, 4)


# --- selectors -----------------------------------------------------------------

@pytest.mark.parametrize("sel,labels,want", [
    ({}, {}, True),
    ({}, {"a": "1"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]},
     {"a": "2"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]},
     {"a": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"b": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"b": "1"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "1"}, False),
    ({"matchLabels": {"a": "1"},
      "matchExpressions": [{"key": "b", "operator": "Exists"}]}, {"a": "1"}, False),
])
def test_selector_semantics(sel: dict[str, Any], labels: dict[str, str], want: bool) -> None:
    assert Selector.parse(sel).matches(labels) is want


def test_selector_key_is_canonical() -> None:
    a = Selector.parse({"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [
        {"key": "c", "operator": "In", "values": ["y", "x"]}]})
    b = Selector.parse({"matchExpressions": [
        {"key": "c", "operator": "In", "values": ["x", "y"]},
        {"key": "a", "operator": "In", "values": ["1"]}], "matchLabels": {"b": "2"}})
    assert a == b and a.key == b.key == "a In (1),b In (2),c In (x,y)"


@pytest.mark.parametrize("sel,msg", [
    ({"matchExpressions": [{"key": "a", "operator": "Near"}]}, "'Near'"),
    ({"matchExpressions": [{"key": "a", "operator": "In"}]}, "needs values"),
    ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["1"]}]},
     "takes no values"),
    ({"matchLabels": ["a"]}, "matchLabels"),
])
def test_bad_selectors_are_named(sel: dict[str, Any], msg: str) -> None:
    with pytest.raises(SelectorError, match=msg):
        Selector.parse(sel)


# --- parsing --------------------------------------------------------------------

def test_policy_types_explicit_and_implied() -> None:
    assert (pol({"podSelector": {}}).ingress, pol({"podSelector": {}}).egress) == (True, False)
    p = pol({"podSelector": {}, "egress": [{}]})
    assert (p.ingress, p.egress) == (True, True)
    p = pol({"podSelector": {}, "policyTypes": ["Egress"]})
    assert (p.ingress, p.egress) == (False, True)


@pytest.mark.parametrize("spec,msg", [
    ({"policyTypes": ["Sideways"]}, "'Sideways'"),
    ({"ingress": [{"ports": [{"protocol": "ICMP"}]}]}, r"ingress\[0\].ports\[0\].protocol"),
    ({"ingress": [{"ports": [{"port": 70000}]}]}, "70000"),
    ({"ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}, "endPort: 80"),
    ({"ingress": [{"ports": [{"port": "http", "endPort": 80}]}]}, "numeric port"),
    ({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}, "10.0.0.0/33"),
    ({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8",
                                         "except": ["11.0.0.0/16"]}}]}]}, "11.0.0.0/16"),
    ({"egress": [{"to": [{}]}]}, r"egress\[0\].to\[0\]"),
])
def test_bad_policies_are_named(spec: dict[str, Any], msg: str) -> None:
    with pytest.raises(PolicyError, match=msg):
        pol({"podSelector": {}, **spec})


# --- the namespace's default deny ----------------------------------------------------

def test_default_deny_port_groups_and_tiers() -> None:
    a, b = pod("a", "10.244.1.5"), pod("b", "10.244.2.5")
    rows = netpol.namespace_rows("x", [a, b], [a])
    pgs = {r.name: r for r in rows if isinstance(r, PortGroup)}
    ing, eg = names.deny_pg_name("x", "Ingress"), names.deny_pg_name("x", "Egress")
    assert pgs[ing].ports == ("x_a", "x_b") and pgs[eg].ports == ("x_a",)
    by = {(r.direction, r.priority, r.action, r.match) for r in acls(rows)}
    assert ("to-lport", 1000, "drop", f"outport == @{ing}") in by
    assert ("to-lport", 1001, "allow", f"outport == @{ing} && (arp || nd)") in by
    assert ("to-lport", 1001, "allow-related",
            f"outport == @{ing} && ip4.src == 169.254.169.5") in by
    assert ("from-lport", 1000, "drop", f"inport == @{eg}") in by
    assert all(r.options == {"apply-after-lb": "true"} for r in acls(rows)
               if r.direction == "from-lport")
    assert all(not r.log for r in acls(rows))
    assert pgs[ing].name.startswith("a") and pgs[ing].name[1:].isdigit()


def test_acl_logging_sets_log_severity_and_meter() -> None:
    a = pod("a", "10.244.1.5")
    rows = netpol.namespace_rows("x", [a], [], AclLogging(deny="alert", allow="notice"))
    drops = [r for r in acls(rows) if r.action == "drop"]
    assert {(r.log, r.severity, r.meter) for r in drops} == {(True, "alert", "acl-logging")}
    assert all(not r.log for r in acls(rows) if r.action != "drop")
    p = pol({"podSelector": {}, "ingress": [{}]})
    allow = only_acl(netpol.policy_rows(p, [a], logging=AclLogging(allow="notice")))
    assert (allow.log, allow.severity, allow.name) == (True, "notice", "NP:x:p:Ingress:0")


def test_acl_logging_annotation_values() -> None:
    assert AclLogging.parse('{"deny": "alert", "allow": "notice"}') == AclLogging(
        "alert", "notice")
    assert AclLogging.parse(None) == AclLogging()
    for bad, msg in (('{"deny": "loud"}', "'loud'"), ("deny", "not JSON"),
                     ('{"reject": "info"}', "'reject'"), ("[1]", "not a JSON object")):
        with pytest.raises(PolicyError, match=msg):
            AclLogging.parse(bad)


# --- one policy ------------------------------------------------------------------------

def test_policy_port_group_holds_selected_pods() -> None:
    p = pol({"podSelector": {"matchLabels": {"app": "web"}}})
    rows = netpol.policy_rows(p, [pod("w", "10.244.1.5", app="web")])
    (pg,) = [r for r in rows if isinstance(r, PortGroup)]
    assert pg.name == names.policy_pg_name("x", "p") and pg.ports == ("x_w",)
    assert pg.external_ids["k8s.ovn.org/name"] == "x/p"
    assert acls(rows) == []  # Ingress with no rules: deny all, nothing allowed


def test_empty_rule_allows_everything_missing_rules_nothing() -> None:
    pg = names.policy_pg_name("x", "p")
    a = only_acl(netpol.policy_rows(pol({"podSelector": {}, "ingress": [{}]}), []))
    assert (a.match, a.action, a.priority) == (f"outport == @{pg}", "allow-related", 1001)
    a = only_acl(netpol.policy_rows(pol({"podSelector": {}, "ingress": [{"from": []}]}), []))
    assert a.match == f"outport == @{pg}"  # an empty `from` is no restriction either
    assert acls(netpol.policy_rows(pol({"podSelector": {}, "policyTypes": ["Ingress"]}),
                                   [])) == []


def test_pod_and_namespace_selectors_and_vs_or() -> None:
    both = pol({"podSelector": {}, "ingress": [{"from": [
        {"podSelector": {"matchLabels": {"pod": "b"}},
         "namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]})
    two = pol({"podSelector": {}, "ingress": [{"from": [
        {"podSelector": {"matchLabels": {"pod": "b"}}},
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]})
    (peer,) = both.peers()
    assert peer.namespace is None and peer.ns_selector is not None
    # AND: one address set of pods "b" in ns=y namespaces
    assert both.ingress_rules[0].selectors == (peer,)
    yb, xb, ya = pod("b", "1.0.0.1", "y", pod="b"), pod("b", "1.0.0.2", "x", pod="b"), \
        pod("a", "1.0.0.3", "y", pod="a")
    assert peer.selects(yb, {"ns": "y"}) and not peer.selects(xb, {"ns": "x"})
    assert not peer.selects(ya, {"ns": "y"})
    m = only_acl(netpol.policy_rows(both, [])).match
    anded = as_of(None, {"matchLabels": {"pod": "b"}}, {"matchLabels": {"ns": "y"}})
    assert f"ip4.src == {anded}" in m
    # OR: two address sets in one set match
    m = only_acl(netpol.policy_rows(two, [])).match
    sets = sorted([as_of("x", {"matchLabels": {"pod": "b"}}),
                   as_of(None, {}, {"matchLabels": {"ns": "y"}})])
    assert f"ip4.src == {{{', '.join(sets)}}}" in m


def test_address_sets_hold_selected_pod_ips_sorted() -> None:
    peer = PeerSelector(Selector.parse({"matchLabels": {"pod": "b"}}), namespace="x")
    (aset,) = netpol.address_set_rows(peer, [pod("b", "10.244.1.10"), pod("c", "10.244.1.9")])
    assert isinstance(aset, AddressSet)
    assert aset.addresses == ("10.244.1.9", "10.244.1.10")
    assert aset.external_ids == {"k8s.ovn.org/name": peer.id, "ip-family": "v4"}
    v4, v6 = netpol.address_set_rows(peer, [pod("b", "fd00::5"), pod("c", "10.0.0.1")], (4, 6))
    assert isinstance(v4, AddressSet) and isinstance(v6, AddressSet)
    assert (v4.addresses, v6.addresses) == (("10.0.0.1",), ("fd00::5",))
    assert v4.name != v6.name


def test_ip_block_with_except() -> None:
    p = pol({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.0.0/16"]}},
        {"ipBlock": {"cidr": "192.168.0.0/16"}}]}]})
    pg = names.policy_pg_name("x", "p")
    a = only_acl(netpol.policy_rows(p, []))
    assert a.direction == "from-lport" and a.options == {"apply-after-lb": "true"}
    assert a.match == (f"inport == @{pg} && ((ip4.dst == 10.0.0.0/8 && "
                       "ip4.dst != {10.1.0.0/16, 10.2.0.0/16}) || ip4.dst == 192.168.0.0/16)")


def test_ports_numbers_ranges_protocols() -> None:
    p = pol({"podSelector": {}, "ingress": [{"ports": [
        {"port": 80}, {"protocol": "UDP", "port": 81}, {"protocol": "SCTP"},
        {"port": 1000, "endPort": 2000}, {"protocol": "UDP", "port": 53, "endPort": 53}]}]})
    pg = names.policy_pg_name("x", "p")
    assert only_acl(netpol.policy_rows(p, [])).match == (
        f"outport == @{pg} && ((tcp && tcp.dst == 80) || (udp && udp.dst == 81) || sctp"
        " || (tcp && 1000 <= tcp.dst <= 2000) || (udp && udp.dst == 53))")


def test_named_ports_resolve_per_destination_pod() -> None:
    p = pol({"podSelector": {}, "ingress": [{"ports": [{"port": "http"},
                                                       {"protocol": "UDP", "port": "dns"}]}]})
    a = pod("a", "10.244.1.5", ports=(("http", "TCP", 8080),))
    b = pod("b", "10.244.1.6", ports=(("http", "TCP", 9090), ("dns", "UDP", 53)))
    c = pod("c", "10.244.1.7", ports=(("http", "TCP", 8080),))
    m = only_acl(netpol.policy_rows(p, [a, b, c])).match
    assert "(ip4.dst == {10.244.1.5, 10.244.1.7} && tcp && tcp.dst == 8080)" in m
    assert "(ip4.dst == 10.244.1.6 && tcp && tcp.dst == 9090)" in m
    assert "(ip4.dst == 10.244.1.6 && udp && udp.dst == 53)" in m
    # No selected pod has the name: the rule admits nothing.
    assert acls(netpol.policy_rows(p, [pod("d", "10.244.1.8")])) == []


def test_egress_named_ports_resolve_on_peer_pods() -> None:
    p = pol({"podSelector": {}, "egress": [{"to": [{"podSelector": {
        "matchLabels": {"pod": "b"}}}], "ports": [{"port": "http"}]}]})
    assert p.named_port_egress == (0,) and not p.named_port_egress_anywhere
    b = pod("b", "10.244.2.6", ports=(("http", "TCP", 8081),), pod="b")
    m = only_acl(netpol.policy_rows(p, [], {0: [b]})).match
    assert m.endswith(f"ip4.dst == {as_of('x', {'matchLabels': {'pod': 'b'}})} && "
                      "ip4.dst == 10.244.2.6 && tcp && tcp.dst == 8081")


def test_several_rules_each_one_acl_and_policies_union() -> None:
    p = pol({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}, {"ports": [{"port": 81}]}],
             "egress": [{}]})
    rows = netpol.policy_rows(p, [])
    assert sorted(a.name or "" for a in acls(rows)) == [
        "NP:x:p:Egress:0", "NP:x:p:Ingress:0", "NP:x:p:Ingress:1"]
    # Two policies on one pod: both port groups hold it, the default deny once.
    a = pod("a", "10.244.1.5")
    rows = netpol.namespace_rows("x", {a, a}, ())
    (ing, _eg) = [r for r in rows if isinstance(r, PortGroup)]
    assert ing.ports == ("x_a",)


def test_acl_names_fit_the_schema() -> None:
    p = pol({"podSelector": {}, "ingress": [{}]}, ns="n" * 40, name="p" * 40)
    assert len(only_acl(netpol.policy_rows(p, [])).name or "") == 63


def test_translation_is_deterministic() -> None:
    p = pol({"podSelector": {}, "ingress": [{"from": [
        {"podSelector": {"matchLabels": {"a": "1"}}},
        {"namespaceSelector": {}}]}]})
    pods = [pod("a", "10.0.0.2"), pod("b", "10.0.0.1")]
    assert netpol.policy_rows(p, pods) == netpol.policy_rows(p, list(reversed(pods)))
    assert names.hash_for_ovn("x") == names.hash_for_ovn("x") != names.hash_for_ovn("y")


def test_host_network_and_unscheduled_pods_are_never_selected() -> None:
    from ovnkube.master.translate.pod import network_ips
    ann = {"k8s.ovn.org/pod-networks": json.dumps({"default": {
        "ip_addresses": ["10.244.1.5/24"], "mac_address": "0a:58:0a:f4:01:05",
        "gateway_ips": ["10.244.1.1"]}})}
    base = {"metadata": {"namespace": "x", "name": "p", "annotations": ann}}
    assert network_ips({**base, "spec": {"nodeName": "n1"}}) == ("10.244.1.5",)
    assert network_ips({**base, "spec": {"nodeName": "n1", "hostNetwork": True}}) is None
    assert network_ips({**base, "spec": {}}) is None
    assert network_ips({**base, "spec": {"nodeName": "n1"},
                        "status": {"phase": "Succeeded"}}) is None
