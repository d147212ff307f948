"""The node controller: a subnet and a join address per node (recorded in
node annotations), and the node's part of the topology: its switch, router
port, management port and, once the node agent reports its gateway, the
gateway router."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from kubernetes import client

from northd_sync.rows import Row
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
    format_node_gr_lrp_ifaddr,
    format_node_subnets,
    parse_node_gr_lrp_ifaddr,
    parse_node_subnets,
)
from ovnkube.kubeclient import Obj, get_annotations, node_path, patch_annotations, post_event
from ovnkube.master import topology
from ovnkube.master.allocators import AllocationError

if TYPE_CHECKING:
    from ovnkube.master.controller import Master

log = logging.getLogger(__name__)

OWNER_TYPE = "Node"
T = TypeVar("T")


def _recorded(node: Obj, key: str, parse: Callable[[str], T]) -> T | None:
    """A node annotation, parsed; None when absent or malformed (logged)."""
    raw = get_annotations(node).get(key)
    if raw is None:
        return None
    try:
        return parse(raw)
    except AnnotationError as e:
        log.warning("node %s: ignoring %s", node["metadata"]["name"], e)
        return None


def recorded_subnets(node: Obj) -> list[IPNetwork] | None:
    return _recorded(node, NODE_SUBNETS, parse_node_subnets)


def recorded_join_ip(node: Obj) -> IPInterface | None:
    return _recorded(node, NODE_GR_LRP_IFADDR, parse_node_gr_lrp_ifaddr)


def gateway_config(node: Obj) -> L3GatewayConfig | None:
    return _recorded(node, L3_GATEWAY_CONFIG, L3GatewayConfig.parse)


class NodeController:
    def __init__(self, master: Master) -> None:
        self.m = master
        self.core = client.CoreV1Api(master.api)

    def on_event(self, key: str, old: Obj | None, new: Obj | None) -> None:
        self.m.node_queue.add(key)

    def mark_existing(self, nodes: list[Obj]) -> None:
        """Before any allocation: claim the subnets and join addresses nodes have."""
        for node in nodes:
            name = node["metadata"]["name"]
            for net in recorded_subnets(node) or []:
                try:
                    self.m.subnets.mark(name, net)
                    self.m.add_pool(name, net)
                except AllocationError as e:
                    log.error("node %s: %s", name, e)
            jip = recorded_join_ip(node)
            if jip is not None:
                try:
                    self.m.join_ips.mark(name, jip.ip)
                except AllocationError as e:
                    log.error("node %s: %s", name, e)

    def desired(self, node: Obj) -> list[Row] | None:
        name = node["metadata"]["name"]
        subnet = self.m.subnets.get(name)
        join_ip = self.m.join_ips.get(name)
        if subnet is None or join_ip is None:
            return None
        ann = get_annotations(node)
        return topology.node_rows(
            self.m.config, name, subnet,
            ipaddress.ip_interface(f"{join_ip}/{self.m.config.join_subnet.prefixlen}"),
            chassis=ann.get(NODE_CHASSIS_ID), gateway=gateway_config(node),
            mgmt_mac=ann.get(NODE_MGMT_PORT_MAC))

    def has_gateway(self, name: str) -> bool:
        """Whether the node's desired rows include its gateway router."""
        node = self.m.nodes.get(name)
        return bool(node and self.m.subnets.get(name) and gateway_config(node)
                    and get_annotations(node).get(NODE_CHASSIS_ID))

    def reconcile(self, name: str) -> None:
        node = self.m.nodes.get(name)
        if node is None:
            self.m.engine.delete(topology.owner(OWNER_TYPE, name))
            self.m.subnets.release(name)
            self.m.join_ips.release(name)
            self.m.drop_pool(name)
            return
        self._ensure_addresses(node)
        rows = self.desired(self.m.nodes.get(name) or node)
        assert rows is not None
        self.m.engine.apply(topology.owner(OWNER_TYPE, name), rows)
        self.m.pod_controller.wake_waiting(name)

    def _ensure_addresses(self, node: Obj) -> None:
        name = node["metadata"]["name"]
        patch: dict[str, str | None] = {}
        subnets = recorded_subnets(node)
        have = self.m.subnets.get(name)
        if not subnets or have is None or have not in subnets:
            try:
                net = self.m.subnets.allocate(name)
            except AllocationError as e:
                post_event(self.core, node, "ErrorAllocatingNodeSubnet", str(e))
                raise
            patch[NODE_SUBNETS] = format_node_subnets([net])
            self.m.add_pool(name, net)
        jip = recorded_join_ip(node)
        have_j = self.m.join_ips.get(name)
        if jip is None or have_j is None or jip.ip != have_j:
            ip = self.m.join_ips.allocate(name)
            patch[NODE_GR_LRP_IFADDR] = format_node_gr_lrp_ifaddr(
                ipaddress.ip_interface(f"{ip}/{self.m.config.join_subnet.prefixlen}"))
        if patch:
            updated = patch_annotations(self.m.api, node_path(name), patch)
            self.m.nodes.update_local(updated)
