"""Hostile annotation values (property-based, hypothesis): whatever string
someone writes into an annotation master and node read, its parser either
returns a valid value or raises AnnotationError naming the annotation, with a
bounded message; never another exception."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ovnkube.annotations import (
    L3_GATEWAY_CONFIG,
    NODE_CHASSIS_ID,
    NODE_GR_LRP_IFADDR,
    NODE_MGMT_PORT_MAC,
    NODE_SUBNETS,
    POD_NETWORKS,
    AnnotationError,
    L3GatewayConfig,
    PodNetwork,
    Route,
    parse_node_chassis_id,
    parse_node_gr_lrp_ifaddr,
    parse_node_mgmt_port_mac,
    parse_node_subnets,
)

MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# --- strategies -------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12)
ipv4s = st.ip_addresses(v=4).map(str)
ipv6s = st.ip_addresses(v=6).map(str)
ips = ipv4s | ipv6s
ifaces = st.builds(lambda a, n: f"{a}/{n}", ips, st.integers(0, 128))
valid_ifaces = (st.builds(lambda a, n: f"{a}/{n}", ipv4s, st.integers(0, 32))
                | st.builds(lambda a, n: f"{a}/{n}", ipv6s, st.integers(0, 128)))
cidrs = st.builds(lambda a, n: str(ipaddress.ip_network(f"{a}/{n}", strict=False)),
                  ipv4s, st.integers(0, 32))
macs = st.builds(lambda b: ":".join(f"{x:02x}" for x in b), st.binary(min_size=6, max_size=6))
# Near-valid leaves: a plausible value, or anything JSON can hold.
almost_str = st.one_of(ips, ifaces, cidrs, macs, st.sampled_from(
    ["", "shared", "local", "br-ex", "br-ex_n1", "true", "false", "0", "4095", "10.0.0.1"]),
    json_values)


def almost_list(x: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(x, max_size=3) | x


pod_fields = st.fixed_dictionaries({}, optional={
    "ip_addresses": almost_list(almost_str), "ip_address": almost_str,
    "mac_address": almost_str, "gateway_ips": almost_list(almost_str),
    "gateway_ip": almost_str,
    "routes": almost_list(st.fixed_dictionaries({}, optional={"dest": almost_str,
                                                              "nextHop": almost_str})
                          | json_values)})
gw_fields = st.fixed_dictionaries({}, optional={
    "mode": almost_str, "interface-id": almost_str, "mac-address": almost_str,
    "ip-addresses": almost_list(almost_str), "ip-address": almost_str,
    "next-hops": almost_list(almost_str), "next-hop": almost_str,
    "bridge-id": almost_str, "node-port-enable": almost_str,
    "vlan-id": almost_str | st.integers(-5, 5000)})


def wrapped(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    """`{"default": <inner>}` mostly, sometimes garbage around it."""
    return st.one_of(
        st.builds(lambda d: json.dumps({"default": d}), inner),
        st.builds(lambda d: json.dumps({"default": d}), json_values),
        json_values.map(json.dumps),
        st.text(max_size=50))


def hostile(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    return st.one_of(st.text(), wrapped(inner))


def parses_or_names_itself(parse: Callable[[str], Any], key: str, value: str) -> Any:
    try:
        return parse(value)
    except AnnotationError as e:
        msg = str(e)
        assert e.key == key and f"annotation {key}=" in msg, msg
        assert len(msg) < 1000, "the message quotes a bounded part of the value"
        return None


# --- properties -------------------------------------------------------------

@SETTINGS
@given(hostile(pod_fields))
def test_pod_networks_parses_or_names_itself(value: str) -> None:
    net = parses_or_names_itself(PodNetwork.parse, POD_NETWORKS, value)
    if net is not None:
        assert net.ip_addresses and all(
            isinstance(i, ipaddress.IPv4Interface | ipaddress.IPv6Interface)
            for i in net.ip_addresses)
        assert MAC.fullmatch(net.mac_address)
        assert all(isinstance(g, ipaddress.IPv4Address | ipaddress.IPv6Address)
                   for g in net.gateway_ips)
        assert all(isinstance(r, Route) for r in net.routes)
        # What the master writes back parses to the same value.
        assert PodNetwork.parse(net.to_annotation()) == net


@SETTINGS
@given(hostile(gw_fields))
def test_l3_gateway_config_parses_or_names_itself(value: str) -> None:
    gw = parses_or_names_itself(L3GatewayConfig.parse, L3_GATEWAY_CONFIG, value)
    if gw is not None:
        assert gw.mode in ("shared", "local")
        assert gw.interface_id and gw.bridge_id and MAC.fullmatch(gw.mac_address)
        assert 0 <= gw.vlan_id <= 4094
        assert all(isinstance(i, ipaddress.IPv4Interface | ipaddress.IPv6Interface)
                   for i in gw.ip_addresses)
        assert L3GatewayConfig.parse(gw.to_annotation()) == gw


@SETTINGS
@given(st.one_of(st.text(), wrapped(almost_list(almost_str))))
def test_node_subnets_parses_or_names_itself(value: str) -> None:
    subnets = parses_or_names_itself(parse_node_subnets, NODE_SUBNETS, value)
    if subnets is not None:
        assert subnets
        for sn in subnets:
            assert isinstance(sn, ipaddress.IPv4Network | ipaddress.IPv6Network)
            assert sn.num_addresses >= 4  # router port, management port, a pod


@SETTINGS
@given(st.one_of(st.text(), json_values.map(json.dumps),
                 st.builds(lambda v: json.dumps({"ipv4": v}), almost_str)))
def test_gateway_router_join_address_parses_or_names_itself(value: str) -> None:
    addr = parses_or_names_itself(parse_node_gr_lrp_ifaddr, NODE_GR_LRP_IFADDR, value)
    if addr is not None:
        assert isinstance(addr, ipaddress.IPv4Interface)


@SETTINGS
@given(st.one_of(st.text(), st.uuids().map(str), st.from_regex(r"[a-z0-9.-]{1,60}",
                                                                fullmatch=True)))
def test_chassis_id_parses_or_names_itself(value: str) -> None:
    cid = parses_or_names_itself(parse_node_chassis_id, NODE_CHASSIS_ID, value)
    if cid is not None:
        assert cid == value and 0 < len(cid) <= 253
        assert not any(c.isspace() or c in "\"'\\,;=" or ord(c) < 32 for c in cid)


@SETTINGS
@given(st.one_of(st.text(max_size=30), macs, macs.map(str.upper)))
def test_mgmt_port_mac_parses_or_names_itself(value: str) -> None:
    mac = parses_or_names_itself(parse_node_mgmt_port_mac, NODE_MGMT_PORT_MAC, value)
    if mac is not None:
        assert MAC.fullmatch(mac) and mac == value.lower()


@SETTINGS
@given(st.lists(valid_ifaces, min_size=1, max_size=3), macs, st.lists(ips, max_size=2),
       st.lists(st.tuples(cidrs, ipv4s), max_size=3))
def test_pod_networks_round_trip(addrs: list[str], mac: str, gws: list[str],
                                 routes: list[tuple[str, str]]) -> None:
    net = PodNetwork(tuple(ipaddress.ip_interface(a) for a in addrs), mac,
                     tuple(ipaddress.ip_address(g) for g in gws),
                     tuple(Route(ipaddress.ip_network(d), ipaddress.ip_address(h))
                           for d, h in routes))
    assert PodNetwork.parse(net.to_annotation()) == net


# --- the cases that used to escape as other exceptions ------------------------

@pytest.mark.parametrize(("parse", "key", "value", "names"), [
    # AttributeError: the network's value was not an object.
    (PodNetwork.parse, POD_NETWORKS, '{"default": 1}', "default 1 is not an object"),
    (PodNetwork.parse, POD_NETWORKS, '{"default": "x"}', "not an object"),
    (L3GatewayConfig.parse, L3_GATEWAY_CONFIG, '{"default": []}', "not an object"),
    # RecursionError from json for deeply nested input.
    (PodNetwork.parse, POD_NETWORKS, "[" * 100_000, "not JSON"),
    (parse_node_subnets, NODE_SUBNETS, "[" * 100_000, "not JSON"),
    # Accepted before: numbers as addresses (ipaddress takes ints), any MAC-ish text.
    (PodNetwork.parse, POD_NETWORKS,
     '{"default": {"ip_addresses": [5], "mac_address": "0a:58:0a:f4:01:05"}}',
     "ip_addresses 5 is not a string"),
    (PodNetwork.parse, POD_NETWORKS,
     '{"default": {"ip_addresses": ["10.244.1.5/24"], "mac_address": "zz:zz:zz:zz:zz:zz"}}',
     "bad MAC 'zz:zz:zz:zz:zz:zz'"),
    (parse_node_subnets, NODE_SUBNETS, '{"default": []}', "no subnet"),
    (parse_node_subnets, NODE_SUBNETS, '{"default": [167772160]}', "is not a string"),
    (parse_node_subnets, NODE_SUBNETS, '{"default": "10.244.1.1/32"}', "too small"),
    (parse_node_gr_lrp_ifaddr, NODE_GR_LRP_IFADDR, '{"ipv4": "fd00::2/64"}', "not an IPv4"),
    (L3GatewayConfig.parse, L3_GATEWAY_CONFIG,
     json.dumps({"default": {"mode": "shared", "interface-id": 7, "mac-address":
                             "02:00:00:00:00:01"}}), "interface-id 7 is not a string"),
    (L3GatewayConfig.parse, L3_GATEWAY_CONFIG,
     json.dumps({"default": {"mode": "bridge", "interface-id": "br-ex_n1", "mac-address":
                             "02:00:00:00:00:01"}}), "mode 'bridge'"),
    (L3GatewayConfig.parse, L3_GATEWAY_CONFIG,
     json.dumps({"default": {"mode": "shared", "interface-id": "br-ex_n1",
                             "mac-address": "02:00:00:00:00:01", "vlan-id": "5000"}}),
     "vlan-id '5000'"),
    (parse_node_chassis_id, NODE_CHASSIS_ID, 'n1" -- destroy', "not a chassis name"),
    (parse_node_chassis_id, NODE_CHASSIS_ID, "", "not a chassis name"),
    (parse_node_mgmt_port_mac, NODE_MGMT_PORT_MAC, "0a:58:0a:f4:01:02 10.0.0.1", "bad MAC"),
])
def test_bad_values_are_named(parse: Callable[[str], Any], key: str, value: str,
                              names: str) -> None:
    with pytest.raises(AnnotationError) as e:
        parse(value)
    assert e.value.key == key and key in str(e.value) and names in str(e.value), str(e.value)
    assert len(str(e.value)) < 1000


def test_node_annotation_errors_name_each_bad_one() -> None:
    from ovnkube.master.controllers.node_tracker import (
        annotation_errors,
        recorded_chassis,
        recorded_mgmt_mac,
    )
    node = {"metadata": {"name": "n1", "annotations": {
        NODE_SUBNETS: '{"default": "10.244.1.0/24"}', NODE_CHASSIS_ID: "n1 n2",
        NODE_MGMT_PORT_MAC: "0A:58:0A:F4:01:02", L3_GATEWAY_CONFIG: "{}",
        NODE_GR_LRP_IFADDR: '{"ipv4": "100.64.0.2/16"}', "unrelated": "{"}}}
    assert sorted(e.key for e in annotation_errors(node)) == [L3_GATEWAY_CONFIG,
                                                             NODE_CHASSIS_ID]
    assert recorded_chassis(node) is None
    assert recorded_mgmt_mac(node) == "0a:58:0a:f4:01:02"
    assert annotation_errors({"metadata": {"name": "n2"}}) == []
