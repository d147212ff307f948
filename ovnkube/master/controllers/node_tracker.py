"""What the master knows of each node, read from the node informer and the
allocators: its recorded addresses, and whether it has a gateway router
(with the one predicate the node translation uses to write that router).

The service controller reads it for the nodes its per-node load balancers
name; the node controller for the addresses its rows are made of.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

from ovnkube import names
from ovnkube.annotations import (
    L3_GATEWAY_CONFIG,
    NODE_CHASSIS_ID,
    NODE_GR_LRP_IFADDR,
    NODE_MGMT_PORT_MAC,
    NODE_SUBNETS,
    AnnotationError,
    IPInterface,
    IPNetwork,
    L3GatewayConfig,
    parse_node_chassis_id,
    parse_node_gr_lrp_ifaddr,
    parse_node_mgmt_port_mac,
    parse_node_subnets,
)
from ovnkube.informer import Informer
from ovnkube.kubeclient import Obj, get_annotations
from ovnkube.master.allocators import IPPool, SubnetAllocator
from ovnkube.master.translate.node import has_gateway_router

log = logging.getLogger(__name__)

T = TypeVar("T")


def _recorded(node: Obj, key: str, parse: Callable[[str], T]) -> T | None:
    """A node annotation, parsed; None when absent or malformed (logged)."""
    raw = get_annotations(node).get(key)
    if raw is None:
        return None
    try:
        return parse(raw)
    except AnnotationError as e:
        log.debug("node %s: ignoring %s", node["metadata"]["name"], e)  # reported once: node.py
        return None


def recorded_subnets(node: Obj) -> list[IPNetwork] | None:
    return _recorded(node, NODE_SUBNETS, parse_node_subnets)


def recorded_join_ip(node: Obj) -> IPInterface | None:
    return _recorded(node, NODE_GR_LRP_IFADDR, parse_node_gr_lrp_ifaddr)


def gateway_config(node: Obj) -> L3GatewayConfig | None:
    return _recorded(node, L3_GATEWAY_CONFIG, L3GatewayConfig.parse)


def recorded_chassis(node: Obj) -> str | None:
    return _recorded(node, NODE_CHASSIS_ID, parse_node_chassis_id)


def recorded_mgmt_mac(node: Obj) -> str | None:
    return _recorded(node, NODE_MGMT_PORT_MAC, parse_node_mgmt_port_mac)


# Every node annotation the master reads, with its parser.
NODE_ANNOTATION_PARSERS: dict[str, Callable[[str], object]] = {
    NODE_SUBNETS: parse_node_subnets,
    NODE_GR_LRP_IFADDR: parse_node_gr_lrp_ifaddr,
    L3_GATEWAY_CONFIG: L3GatewayConfig.parse,
    NODE_CHASSIS_ID: parse_node_chassis_id,
    NODE_MGMT_PORT_MAC: parse_node_mgmt_port_mac,
}


def annotation_errors(node: Obj) -> list[AnnotationError]:
    """The node annotations the master reads that are present but malformed."""
    ann = get_annotations(node)
    errors = []
    for key, parse in NODE_ANNOTATION_PARSERS.items():
        if key in ann:
            try:
                parse(ann[key])
            except AnnotationError as e:
                errors.append(e)
    return errors


def gateway_ips(node: Obj) -> tuple[str, ...]:
    """The addresses the node's agent reported for its gateway."""
    gw = gateway_config(node)
    return tuple(str(i.ip) for i in gw.ip_addresses) if gw else ()


def gateway_facts(node: Obj) -> tuple[object, ...]:
    """What of a node `NodeTracker.gateway_nodes` depends on, as the API has it
    (the allocations follow the subnet and join address annotations)."""
    ann = get_annotations(node)
    return (gateway_ips(node), ann.get(NODE_CHASSIS_ID), ann.get(NODE_SUBNETS),
            ann.get(NODE_GR_LRP_IFADDR))


class NodeTracker:
    def __init__(self, nodes: Informer, subnets: SubnetAllocator, join_ips: IPPool,
                 join_prefixlen: int) -> None:
        self.nodes = nodes
        self.subnets = subnets
        self.join_ips = join_ips
        self.join_prefixlen = join_prefixlen

    def addresses(self, name: str) -> tuple[IPNetwork, IPInterface] | None:
        """The node's subnet and join address, once both are allocated."""
        subnet = self.subnets.get(name)
        join_ip = self.join_ips.get(name)
        if subnet is None or join_ip is None:
            return None
        return subnet, ipaddress.ip_interface(f"{join_ip}/{self.join_prefixlen}")

    def _has_gateway(self, node: Obj) -> bool:
        return self.addresses(node["metadata"]["name"]) is not None and has_gateway_router(
            recorded_chassis(node), gateway_config(node))

    def has_gateway(self, name: str) -> bool:
        """Whether the node's desired rows include its gateway router."""
        node = self.nodes.get(name)
        return node is not None and self._has_gateway(node)

    def gateway_nodes(self) -> dict[str, list[str]]:
        """Nodes that have a gateway router, with their gateway addresses."""
        return {node["metadata"]["name"]: list(gateway_ips(node))
                for node in self.nodes.items() if self._has_gateway(node)}

    def mgmt_ips(self, nodes: Iterable[str]) -> dict[str, list[str]]:
        """Management port addresses (.2 of each recorded subnet) of `nodes`."""
        out: dict[str, list[str]] = {}
        for name in nodes:
            node = self.nodes.get(name)
            raw = get_annotations(node).get(NODE_SUBNETS) if node else None
            try:
                out[name] = [str(names.node_mgmt_ip(sn)) for sn in parse_node_subnets(raw)] \
                    if raw else []
            except AnnotationError:
                out[name] = []
        return out
