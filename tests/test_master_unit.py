"""Pure parts of the master: allocators, annotation formats, config, topology."""

from __future__ import annotations

import argparse
import ipaddress
import json
import re

import pytest

from northd_sync.rows import (
    ACL,
    NAT,
    GatewayChassis,
    LoadBalancer,
    LogicalRouter,
    LogicalRouterPolicy,
    LogicalRouterPort,
    LogicalRouterStaticRoute,
    LogicalSwitch,
    LogicalSwitchPort,
)
from ovnkube.annotations import (
    AnnotationError,
    L3GatewayConfig,
    PodNetwork,
    format_node_gr_lrp_ifaddr,
    format_node_subnets,
    mac_from_ip,
    parse_node_gr_lrp_ifaddr,
    parse_node_subnets,
)
from ovnkube.config import ClusterSubnet, Config, ConfigError, add_common_args, from_args
from ovnkube.master.allocators import AllocationError, SubnetAllocator, pod_pool
from ovnkube.master.translate.node import node_rows
from ovnkube.master.translate.pod import pod_rows

N = ipaddress.ip_network
A = ipaddress.ip_address
I = ipaddress.ip_interface  # noqa: E741


def test_subnet_allocator_lowest_free_and_restart() -> None:
    alloc = SubnetAllocator([ClusterSubnet.parse("10.244.0.0/16/24")])
    alloc.mark("b", N("10.244.0.0/24"))  # from an annotation, before allocating
    assert alloc.allocate("a") == N("10.244.1.0/24")
    assert alloc.allocate("a") == N("10.244.1.0/24")  # idempotent
    with pytest.raises(AllocationError, match="already used by b"):
        alloc.mark("c", N("10.244.0.0/24"))
    with pytest.raises(AllocationError, match="not a /24"):
        alloc.mark("c", N("10.245.0.0/24"))
    alloc.release("b")
    assert alloc.allocate("c") == N("10.244.0.0/24")


def test_subnet_allocator_exhausted() -> None:
    alloc = SubnetAllocator([ClusterSubnet.parse("10.244.0.0/23/24")])
    alloc.allocate("a")
    alloc.allocate("b")
    with pytest.raises(AllocationError, match=re.escape(
            "no free /24 left in cluster subnets 10.244.0.0/23 for c")):
        alloc.allocate("c")


def test_pod_pool_skips_reserved_and_never_doubles() -> None:
    pool = pod_pool(N("10.244.1.0/29"))
    # .0 network, .1 router, .2 management port, .7 broadcast: four left.
    got = [pool.allocate(f"p{i}") for i in range(4)]
    assert sorted(got) == [A(f"10.244.1.{i}") for i in range(3, 7)]
    with pytest.raises(AllocationError, match="no free address left for p5"):
        pool.allocate("p5")
    freed = pool.release("p0")
    assert freed is not None
    assert pool.allocate("p5") == freed
    with pytest.raises(AllocationError, match="already used by p5"):
        pool.mark("p9", freed)


def test_pod_networks_annotation_round_trip_and_errors() -> None:
    net = PodNetwork((I("10.244.1.5/24"),), mac_from_ip(A("10.244.1.5")), (A("10.244.1.1"),))
    assert net.mac_address == "0a:58:0a:f4:01:05"
    raw = net.to_annotation()
    data = json.loads(raw)["default"]
    assert data["ip_addresses"] == ["10.244.1.5/24"] and data["gateway_ips"] == ["10.244.1.1"]
    assert data["ip_address"] == "10.244.1.5/24"
    assert PodNetwork.parse(raw) == net
    bad_json = re.escape("k8s.ovn.org/pod-networks='nope': not JSON")
    with pytest.raises(AnnotationError, match=bad_json):
        PodNetwork.parse("nope")
    with pytest.raises(AnnotationError, match=re.escape("ip_addresses: '300.1.1.1/24' does not")):
        PodNetwork.parse('{"default": {"ip_addresses": ["300.1.1.1/24"], "mac_address": "x"}}')


def test_node_annotations() -> None:
    assert parse_node_subnets(format_node_subnets([N("10.244.2.0/24")])) == [N("10.244.2.0/24")]
    assert json.loads(format_node_subnets([N("10.244.2.0/24")])) == {"default": "10.244.2.0/24"}
    with pytest.raises(AnnotationError, match="node-subnets"):
        parse_node_subnets('{"default": "10.244.2.1/24"}')
    gw = L3GatewayConfig("shared", "br-ex_n1", "02:00:00:00:00:01", (I("172.18.0.2/16"),),
                         (A("172.18.0.1"),))
    assert L3GatewayConfig.parse(gw.to_annotation()) == gw
    join = I("100.64.0.2/16")
    assert json.loads(format_node_gr_lrp_ifaddr(join)) == {"ipv4": "100.64.0.2/16"}
    assert parse_node_gr_lrp_ifaddr(format_node_gr_lrp_ifaddr(join)) == join
    for bad in ("nope", '{"ipv6": "fd98::2/64"}', '{"ipv4": "100.64.0.300/16"}', "[1]"):
        with pytest.raises(AnnotationError, match="node-gateway-router-lrp-ifaddr"):
            parse_node_gr_lrp_ifaddr(bad)


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_common_args(p)
    return p.parse_args(list(argv))


def test_config_defaults_and_bad_values() -> None:
    cfg = from_args(_args())
    assert str(cfg.cluster_subnets[0]) == "10.244.0.0/16/24"
    assert str(cfg.service_cidrs[0]) == "10.96.0.0/16" and cfg.mtu == 1400
    for argv, msg in [
        (["--cluster-subnets", "10.244.0.0/33"], "--cluster-subnets '10.244.0.0/33'"),
        (["--cluster-subnets", "10.244.0.0/16/8"], "host prefix /8"),
        (["--mtu", "big"], "--mtu 'big'"),
        (["--mtu", "100"], "--mtu 100"),
        (["--nb-address", "tcp:nowhere"], "--nb-address 'tcp:nowhere'"),
        (["--k8s-service-cidr", "10.244.0.0/16"], "overlap"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            from_args(_args(*argv))


def test_topology_rows_for_a_node_with_gateway() -> None:
    cfg = Config()
    gw = L3GatewayConfig("shared", "br-ex_n1", "02:00:00:00:00:01", (I("172.18.0.2/16"),),
                         (A("172.18.0.1"),))
    rows = node_rows(cfg, "n1", N("10.244.1.0/24"), I("100.64.0.2/16"), "ch-1", gw)
    by = {(type(r).__name__, r.key): r for r in rows}
    sw = by[("LogicalSwitch", "n1")]
    assert isinstance(sw, LogicalSwitch) and sw.other_config["subnet"] == "10.244.1.0/24"
    rtos = by[("LogicalRouterPort", "rtos-n1")]
    assert isinstance(rtos, LogicalRouterPort)
    assert rtos.networks == ("10.244.1.1/24",) and rtos.mac == "0a:58:0a:f4:01:01"
    mgmt = by[("LogicalSwitchPort", "k8s-n1")]
    assert isinstance(mgmt, LogicalSwitchPort)
    assert mgmt.addresses == ("0a:58:0a:f4:01:02 10.244.1.2",)
    gc = [r for r in rows if isinstance(r, GatewayChassis)]
    assert gc[0].chassis_name == "ch-1" and gc[0].router_port == "rtos-n1"
    gr = by[("LogicalRouter", "GR_n1")]
    assert isinstance(gr, LogicalRouter) and gr.options["chassis"] == "ch-1"
    rtoe = by[("LogicalRouterPort", "rtoe-GR_n1")]
    assert isinstance(rtoe, LogicalRouterPort) and rtoe.networks == ("172.18.0.2/16",)
    # The host's masquerade VIP: NodePorts no Service uses are refused.
    rej = by[("LoadBalancer", "GR_n1_masquerade_reject")]
    assert isinstance(rej, LoadBalancer) and rej.routers == ("GR_n1",)
    assert rej.vips == {"169.254.169.1": ""} and rej.options["reject"] == "true"
    nats = [r for r in rows if isinstance(r, NAT)]
    assert [(n.type, n.external_ip, n.logical_ip) for n in nats] == [
        ("snat", "172.18.0.2", "10.244.0.0/16")]
    routes = {(r.router, r.ip_prefix, r.nexthop, r.policy) for r in rows
              if isinstance(r, LogicalRouterStaticRoute)}
    assert routes == {("GR_n1", "10.244.0.0/16", "100.64.0.1", None),
                      ("GR_n1", "0.0.0.0/0", "172.18.0.1", None),
                      # replies to the host's own NodePort traffic
                      ("GR_n1", "169.254.169.2/32", "169.254.169.2", None),
                      ("ovn_cluster_router", "10.244.1.0/24", "100.64.0.2", "src-ip"),
                      ("ovn_cluster_router", "100.64.0.2/32", "100.64.0.2", None)}
    # The node's pods reach the node's own address through its management port.
    (pol,) = [r for r in rows if isinstance(r, LogicalRouterPolicy)]
    assert (pol.router, pol.priority, pol.match, pol.action, tuple(pol.nexthops)) == (
        "ovn_cluster_router", 1004, 'inport == "rtos-n1" && ip4.dst == 172.18.0.2 /* n1 */',
        "reroute", ("10.244.1.2",))
    # Without chassis and gateway: only the node switch part.
    small = node_rows(cfg, "n1", N("10.244.1.0/24"), I("100.64.0.2/16"), None, None)
    assert {type(r).__name__ for r in small} == {"LogicalSwitch", "LogicalRouterPort",
                                                 "LogicalSwitchPort", "ACL"}
    # The node's host reaches its pods whatever NetworkPolicy says.
    (acl,) = [r for r in small if isinstance(r, ACL)]
    assert (acl.switch, acl.direction, acl.priority, acl.match, acl.action) == (
        "n1", "to-lport", 1001, "ip4.src == 10.244.1.2", "allow-related")


def test_topology_pod_port() -> None:
    net = PodNetwork((I("10.244.1.5/24"),), "0a:58:0a:f4:01:05", (A("10.244.1.1"),))
    pod = {"metadata": {"namespace": "ns1", "name": "web", "uid": "u-1"}}
    (lsp,) = pod_rows(pod, "n1", net)
    assert isinstance(lsp, LogicalSwitchPort)
    assert lsp.name == "ns1_web" and lsp.switch == "n1"
    assert lsp.addresses == lsp.port_security == ("0a:58:0a:f4:01:05 10.244.1.5",)
    assert lsp.options["iface-id-ver"] == "u-1" and lsp.options["requested-chassis"] == "n1"
