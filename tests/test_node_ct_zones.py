"""Conntrack timeout policies on the zones ovn-controller allocated (the
userspace datapath's workaround for OVN's timed session affinity)."""

from __future__ import annotations

from collections.abc import Callable

from localcluster.ovn import OvsNode
from node.ct_zone_policy import ConntrackZonePolicies, zones_in_use
from node.ovs import Ovs
from tests.waiting import eventually


def test_zones_in_use() -> None:
    ids = {"ct-zone-GR_n1_dnat": "8", "ct-zone-k8s-n1": "3", "ovn-nb-cfg": "12",
           "ct-zone-bad": "x"}
    assert zones_in_use(ids) == {3, 8}


def test_policies_follow_the_zones_ovn_controller_allocates(
        ovs_node_factory: Callable[..., OvsNode]) -> None:
    node = ovs_node_factory("zones")  # br-int, netdev
    ovs = Ovs(node.db_unix)
    try:
        pol = ConntrackZonePolicies(ovs, node.db_unix)
        assert pol.reconcile() == 0  # no zones yet
        node.vsctl("set", "Bridge", "br-int", 'external_ids:ct-zone-k8s-n1="1"',
                   'external_ids:ct-zone-GR_n1_dnat="5"')

        def seen() -> bool:
            return zones_in_use(ovs.bridge_external_ids("br-int") or {}) == {1, 5}
        eventually(seen, what="IDL sees the zones")
        assert pol.reconcile() == 2
        assert pol.reconcile() == 0  # nothing new
        listed = node.vsctl("list-zone-tp", "netdev")
        assert listed.count("tcp_syn_sent=1") == 2, listed
        assert "Zone:1," in listed and "Zone:5," in listed, listed
        # A new zone later: only it is added.
        node.vsctl("set", "Bridge", "br-int", 'external_ids:ct-zone-pod="9"')
        eventually(lambda: "ct-zone-pod" in (ovs.bridge_external_ids("br-int") or {}),
                   what="IDL sees the new zone")
        assert pol.reconcile() == 1 and pol.done == {1, 5, 9}
    finally:
        ovs.close()
