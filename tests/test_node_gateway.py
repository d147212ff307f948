"""br-ex flows and the host's NodePort NAT: pure text, then applied for real
in a network namespace."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable

from localcluster.netns import NetnsSet
from localcluster.ovn import OvsNode
from node import host_nodeports, netlink
from node.gateway_flows import gateway_flows, port_range_masks
from node.ovs import Ovs

I = ipaddress.ip_interface  # noqa: E741


def test_port_range_masks_cover_exactly_the_range() -> None:
    for lo, hi in ((30000, 32767), (61000, 65535), (5, 5), (0, 65535)):
        covered: set[int] = set()
        for m in port_range_masks(lo, hi):
            value, mask = (int(x, 16) for x in m.split("/"))
            covered |= {p for p in range(65536) if p & mask == value}
        assert covered == set(range(lo, hi + 1)), (lo, hi)


def test_gateway_flows_keep_the_masquerade_subnet_between_host_and_router() -> None:
    flows = gateway_flows(uplink=1, patch=2, node_ips=[I("172.18.1.11/24")], masq=3)
    assert "table=0,priority=110,in_port=3,actions=output:2" in flows
    assert "table=0,priority=110,in_port=2,ip,nw_dst=169.254.169.2,actions=output:3" in flows
    # br-ex answers the router's ARP for the host's masquerade address itself.
    arp = next(f for f in flows if "arp_op=1,arp_tpa=169.254.169.2" in f)
    assert arp.startswith("table=0,priority=120,in_port=2,") and arp.endswith("IN_PORT")
    assert "mod_dl_src:0a:58:a9:fe:a9:02" in arp and "load:0xa9fea902->NXM_OF_ARP_SPA[]" in arp
    # Nothing of the /29 reaches the uplink or comes in from it.
    assert "table=0,priority=105,in_port=2,arp,arp_spa=169.254.169.0/29,actions=drop" in flows
    assert "table=0,priority=105,in_port=1,ip,nw_dst=169.254.169.0/29,actions=drop" in flows
    assert "table=0,priority=105,in_port=2,ip,nw_src=169.254.169.0/29,actions=drop" in flows
    # No masquerade port (IPv6-only node): no flow sends anything to one.
    assert not [f for f in gateway_flows(uplink=1, patch=2) if "output:3" in f]
    # Without a patch port the host alone uses br-ex.
    assert gateway_flows(uplink=1, patch=None) == ["table=0,priority=0,actions=NORMAL"]


def test_nft_ruleset_dnats_node_ips_on_node_ports() -> None:
    rules = host_nodeports.nft_ruleset("ovn-k8s-masq0", [I("172.18.1.12/24"), I("172.18.1.11/24"),
                                                 I("fc00::11/64")])
    assert ("ip daddr { 172.18.1.11, 172.18.1.12 } meta l4proto { tcp, udp, sctp } "
            "th dport 30000-32767 dnat to 169.254.169.1") in rules
    assert 'oifname "ovn-k8s-masq0" ip daddr 169.254.169.1 snat to 169.254.169.2' in rules
    # Replaces the table whole, in one transaction, even the first time.
    assert rules.startswith("table ip ovn-kubernetes {}\ndelete table ip ovn-kubernetes\n")
    assert "chain" not in host_nodeports.nft_ruleset("ovn-k8s-masq0", [I("fc00::11/64")])


def test_nodeport_nat_installs_in_a_namespace_idempotently(
        netns_factory: NetnsSet, ovs_node_factory: Callable[..., OvsNode]) -> None:
    ns = netns_factory.netns("nat")
    path = f"/run/netns/{ns}"
    node = ovs_node_factory("nat", netns=ns, bridge=None)
    node.vsctl("add-br", "br-ex", "--", "set", "Bridge", "br-ex", "datapath_type=netdev")
    ovs = Ovs(node.db_unix)
    try:
        for _ in range(2):
            assert netlink.in_netns(path, lambda: host_nodeports.install(
                ovs, "br-ex", [I("172.18.1.11/24")], "02:00:00:00:00:01", netdev=True))
        # IPv6-only: nothing to do.
        assert not host_nodeports.install(ovs, "br-ex", [I("fc00::11/64")], "02:00:00:00:00:01",
                                          netdev=True)
    finally:
        ovs.close()

    def sh(*cmd: str) -> str:
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True,
                              text=True, check=True).stdout

    table = sh("nft", "list", "table", "ip", "ovn-kubernetes")
    assert table.count("dnat to 169.254.169.1") == 1, table
    assert table.count('oifname "ovn-k8s-masq0" ip daddr 169.254.169.1 snat to '
                       '169.254.169.2') == 1, table
    addrs = sh("ip", "-4", "-o", "addr", "show", "dev", "ovn-k8s-masq0")
    assert addrs.count("169.254.169.2/29") == 1 and "scope link" in addrs, addrs
    assert "0a:58:a9:fe:a9:02" in sh("ip", "link", "show", "ovn-k8s-masq0")
    assert "169.254.169.1 lladdr 02:00:00:00:00:01 PERMANENT" in sh(
        "ip", "neigh", "show", "dev", "ovn-k8s-masq0")
    assert node.vsctl("list-ports", "br-ex").split() == ["ovn-k8s-masq0"]
