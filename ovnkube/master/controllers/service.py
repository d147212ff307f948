"""The service controller: Services and their EndpointSlices to load balancers.

Work is keyed by Service: an EndpointSlice event queues its Service; a node
change queues the Services whose per-node load balancers depend on nodes.
Each reconcile hands the Service's whole desired set to northd_sync, which
writes only what changed, in one transaction.

A node matters to services through what `node_ips` reads: its gateway
addresses and whether its gateway router exists (chassis and subnet known).
Any change of these re-queues the node-dependent services. A per-node load
balancer may name a gateway router or switch the node controller has not
written yet: that reconcile is retried (RetryLater) until it has.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from northd_sync.errors import MissingReferenceError
from northd_sync.rows import Row
from ovnkube import names
from ovnkube.annotations import NODE_CHASSIS_ID, NODE_SUBNETS, AnnotationError, parse_node_subnets
from ovnkube.kubeclient import Obj, get_annotations, key_of, slice_service
from ovnkube.master import topology
from ovnkube.master.nodes import gateway_config
from ovnkube.master.services import service_rows, wants_lbs
from ovnkube.workqueue import RetryLater

if TYPE_CHECKING:
    from ovnkube.master.controller import Master

OWNER_TYPE = "Service"
def depends_on_nodes(svc: Obj) -> bool:
    spec = svc.get("spec", {})
    return spec.get("type") in ("NodePort", "LoadBalancer") or \
        spec.get("internalTrafficPolicy") == "Local"


class ServiceController:
    def __init__(self, master: Master) -> None:
        self.m = master
        self._slices: dict[str, set[str]] = {}  # service key -> slice keys
        self._lock = threading.Lock()

    def on_service(self, key: str, old: Obj | None, new: Obj | None) -> None:
        self.m.service_queue.add(key)

    def on_slice(self, key: str, old: Obj | None, new: Obj | None) -> None:
        svcs = {s for s in (slice_service(o) for o in (old, new) if o) if s}
        with self._lock:
            for svc in svcs:
                keys = self._slices.setdefault(svc, set())
                if new is not None and slice_service(new) == svc:
                    keys.add(key)
                else:
                    keys.discard(key)
        for svc in svcs:
            self.m.service_queue.add(svc)

    def on_node(self, key: str, old: Obj | None, new: Obj | None) -> None:
        if old is not None and new is not None and \
                self._node_facts(old) == self._node_facts(new):
            return
        node_addrs = {ip for n in (old, new) if n for ip in self._node_ips_of(n)}
        for svc in self.m.services.items():
            if depends_on_nodes(svc) or self._has_endpoint_in(svc, node_addrs):
                self.m.service_queue.add(key_of(svc))

    def _has_endpoint_in(self, svc: Obj, addrs: set[str]) -> bool:
        """Whether an endpoint of `svc` is one of `addrs` (a host-network one)."""
        return bool(addrs) and any(
            a in addrs for sl in self.slices_of(key_of(svc))
            for ep in sl.get("endpoints") or [] for a in ep.get("addresses") or [])

    @classmethod
    def _node_facts(cls, node: Obj) -> tuple[object, ...]:
        """What of a node the services' load balancers depend on."""
        ann = get_annotations(node)
        return cls._node_ips_of(node), ann.get(NODE_CHASSIS_ID), ann.get(NODE_SUBNETS)

    @staticmethod
    def _node_ips_of(node: Obj) -> tuple[str, ...]:
        gw = gateway_config(node)
        return tuple(str(i.ip) for i in gw.ip_addresses) if gw else ()

    def node_ips(self) -> dict[str, list[str]]:
        """Nodes that have a gateway router, with their gateway addresses."""
        out: dict[str, list[str]] = {}
        for node in self.m.nodes.items():
            name = node["metadata"]["name"]
            ips = list(self._node_ips_of(node))
            if ips and self.m.node_controller.has_gateway(name):
                out[name] = ips
        return out

    def mgmt_ips(self, nodes: Iterable[str]) -> dict[str, list[str]]:
        """Management port addresses (.2 of each node subnet) of `nodes`."""
        out: dict[str, list[str]] = {}
        for name in nodes:
            node = self.m.nodes.get(name)
            raw = get_annotations(node).get(NODE_SUBNETS) if node else None
            try:
                out[name] = [str(names.node_mgmt_ip(sn)) for sn in parse_node_subnets(raw)] \
                    if raw else []
            except AnnotationError:
                out[name] = []
        return out

    def slices_of(self, key: str) -> list[Obj]:
        with self._lock:
            keys = list(self._slices.get(key, ()))
        return [s for s in (self.m.slices.get(k) for k in keys) if s is not None]

    def desired(self, svc: Obj) -> list[Row]:
        if not wants_lbs(svc):
            return []
        node_ips = self.node_ips()
        return service_rows(svc, self.slices_of(key_of(svc)), node_ips,
                            self.mgmt_ips(node_ips))

    def reconcile(self, key: str) -> None:
        svc = self.m.services.get(key)
        owner = topology.owner(OWNER_TYPE, key)
        if svc is None:
            self.m.engine.delete(owner)
            return
        try:
            self.m.engine.apply(owner, self.desired(svc))
        except MissingReferenceError as e:
            # A node's gateway router or switch is not in the NB yet.
            raise RetryLater(str(e)) from None
