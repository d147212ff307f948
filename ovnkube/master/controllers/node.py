"""The node controller: a subnet and a join address per node (recorded in
node annotations), and the node's part of the topology: its switch, router
port, management port and, once the node agent reports its gateway, the
gateway router (translate/node.py)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from kubernetes import client

from northd_sync import NorthdSync
from northd_sync.rows import Row
from ovnkube.annotations import (
    NODE_GR_LRP_IFADDR,
    NODE_SUBNETS,
    format_node_gr_lrp_ifaddr,
    format_node_subnets,
)
from ovnkube.config import Config
from ovnkube.informer import Informer
from ovnkube.kubeclient import Obj, node_path, patch_annotations, post_event
from ovnkube.master.allocators import AllocationError, IPPool, NodePools, SubnetAllocator
from ovnkube.master.controllers.node_tracker import (
    NodeTracker,
    annotation_errors,
    gateway_config,
    recorded_chassis,
    recorded_join_ip,
    recorded_mgmt_mac,
    recorded_subnets,
)
from ovnkube.master.translate.cluster import owner
from ovnkube.master.translate.node import OWNER_TYPE, node_rows
from ovnkube.workqueue import WorkQueue

log = logging.getLogger(__name__)


class NodeController:
    def __init__(self, config: Config, api: client.ApiClient, engine: NorthdSync,
                 nodes: Informer, subnets: SubnetAllocator, join_ips: IPPool,
                 pools: NodePools, tracker: NodeTracker,
                 on_subnet_ready: Callable[[str], None]) -> None:
        self.config = config
        self.api = api
        self.core = client.CoreV1Api(api)
        self.engine = engine
        self.nodes = nodes
        self.subnets = subnets
        self.join_ips = join_ips
        self.pools = pools
        self.tracker = tracker
        #: called with a node's name once its rows (its switch) are in the NB
        self.on_subnet_ready = on_subnet_ready
        self.queue = WorkQueue("node", self.reconcile, workers=2)
        # (node, annotation) -> the malformed value an Event was posted for
        self._reported: dict[tuple[str, str], object] = {}

    def on_event(self, key: str, old: Obj | None, new: Obj | None) -> None:
        self.queue.add(key)

    def mark_existing(self, nodes: list[Obj]) -> None:
        """Before any allocation: claim the subnets and join addresses nodes have."""
        for node in nodes:
            name = node["metadata"]["name"]
            for net in recorded_subnets(node) or []:
                try:
                    self.subnets.mark(name, net)
                    self.pools.add(name, net)
                except AllocationError as e:
                    log.error("node %s: %s", name, e)
            jip = recorded_join_ip(node)
            if jip is not None:
                try:
                    self.join_ips.mark(name, jip.ip)
                except AllocationError as e:
                    log.error("node %s: %s", name, e)

    def desired(self, node: Obj) -> list[Row] | None:
        name = node["metadata"]["name"]
        addrs = self.tracker.addresses(name)
        if addrs is None:
            return None
        return node_rows(self.config, name, *addrs, chassis=recorded_chassis(node),
                         gateway=gateway_config(node), mgmt_mac=recorded_mgmt_mac(node))

    def report_bad_annotations(self, node: Obj) -> None:
        """An Event on the node for each malformed annotation the master reads
        (once per value): the master goes on as if it were absent (a subnet
        or join address is allocated anew; no gateway router for a bad
        chassis or gateway config; the default management port MAC)."""
        name = node["metadata"]["name"]
        bad = {e.key: e for e in annotation_errors(node)}
        for key, e in bad.items():
            if self._reported.get((name, key)) == e.value:
                continue
            self._reported[(name, key)] = e.value
            log.error("node %s: %s; ignoring it", name, e)
            post_event(self.core, node, "ErrorParsingNodeAnnotation", f"{e}; ignoring it")
        for k in [k for k in self._reported if k[0] == name and k[1] not in bad]:
            del self._reported[k]

    def reconcile(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            for k in [k for k in self._reported if k[0] == name]:
                del self._reported[k]
            self.engine.delete(owner(OWNER_TYPE, name))
            self.subnets.release(name)
            self.join_ips.release(name)
            self.pools.drop(name)
            return
        self.report_bad_annotations(node)
        self._ensure_addresses(node)
        rows = self.desired(self.nodes.get(name) or node)
        assert rows is not None
        self.engine.apply(owner(OWNER_TYPE, name), rows)
        self.on_subnet_ready(name)

    def _ensure_addresses(self, node: Obj) -> None:
        name = node["metadata"]["name"]
        patch: dict[str, str | None] = {}
        subnets = recorded_subnets(node)
        have = self.subnets.get(name)
        if not subnets or have is None or have not in subnets:
            try:
                net = self.subnets.allocate(name)
            except AllocationError as e:
                post_event(self.core, node, "ErrorAllocatingNodeSubnet", str(e))
                raise
            patch[NODE_SUBNETS] = format_node_subnets([net])
            self.pools.add(name, net)
        jip = recorded_join_ip(node)
        have_j = self.join_ips.get(name)
        if jip is None or have_j is None or jip.ip != have_j:
            ip = self.join_ips.allocate(name)
            patch[NODE_GR_LRP_IFADDR] = format_node_gr_lrp_ifaddr(
                ipaddress.ip_interface(f"{ip}/{self.config.join_subnet.prefixlen}"))
        if patch:
            updated = patch_annotations(self.api, node_path(name), patch)
            self.nodes.update_local(updated)
