"""The service controller: Services and their EndpointSlices to load balancers
(translate/service.py).

Work is keyed by Service: an EndpointSlice event queues its Service; a node
change queues the Services whose per-node load balancers depend on nodes.
Each reconcile hands the Service's whole desired set to northd_sync, which
writes only what changed, in one transaction.

A node matters to services through what `NodeTracker.gateway_nodes` reads:
its gateway addresses and whether its gateway router exists (chassis,
subnet and join address known). Any change of these re-queues the
node-dependent services. A per-node load balancer may name a gateway router
or switch the node controller has not written yet: that reconcile is
retried (RetryLater) until it has.
"""

from __future__ import annotations

import threading

from northd_sync import NorthdSync
from northd_sync.errors import MissingReferenceError
from northd_sync.rows import Row
from ovnkube.informer import Informer
from ovnkube.kubeclient import Obj, key_of, slice_service
from ovnkube.master.controllers.node_tracker import NodeTracker, gateway_facts, gateway_ips
from ovnkube.master.translate.cluster import owner
from ovnkube.master.translate.service import OWNER_TYPE, service_rows, wants_lbs
from ovnkube.workqueue import RetryLater, WorkQueue


def depends_on_nodes(svc: Obj) -> bool:
    spec = svc.get("spec", {})
    return spec.get("type") in ("NodePort", "LoadBalancer") or \
        spec.get("internalTrafficPolicy") == "Local"


class ServiceController:
    def __init__(self, engine: NorthdSync, services: Informer, slices: Informer,
                 tracker: NodeTracker, workers: int = 2) -> None:
        self.engine = engine
        self.services = services
        self.slices = slices
        self.tracker = tracker
        self._slices: dict[str, set[str]] = {}  # service key -> slice keys
        self._lock = threading.Lock()
        self.queue = WorkQueue("service", self.reconcile, workers=workers)

    def on_service(self, key: str, old: Obj | None, new: Obj | None) -> None:
        self.queue.add(key)

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
            self.queue.add(svc)

    def on_node(self, key: str, old: Obj | None, new: Obj | None) -> None:
        if old is not None and new is not None and gateway_facts(old) == gateway_facts(new):
            return
        node_addrs = {ip for n in (old, new) if n for ip in gateway_ips(n)}
        for svc in self.services.items():
            if depends_on_nodes(svc) or self._has_endpoint_in(svc, node_addrs):
                self.queue.add(key_of(svc))

    def _has_endpoint_in(self, svc: Obj, addrs: set[str]) -> bool:
        """Whether an endpoint of `svc` is one of `addrs` (a host-network one)."""
        return bool(addrs) and any(
            a in addrs for sl in self.slices_of(key_of(svc))
            for ep in sl.get("endpoints") or [] for a in ep.get("addresses") or [])

    def slices_of(self, key: str) -> list[Obj]:
        with self._lock:
            keys = list(self._slices.get(key, ()))
        return [s for s in (self.slices.get(k) for k in keys) if s is not None]

    def desired(self, svc: Obj) -> list[Row]:
        if not wants_lbs(svc):
            return []
        node_ips = self.tracker.gateway_nodes()
        return service_rows(svc, self.slices_of(key_of(svc)), node_ips,
                            self.tracker.mgmt_ips(node_ips))

    def reconcile(self, key: str) -> None:
        svc = self.services.get(key)
        own = owner(OWNER_TYPE, key)
        if svc is None:
            self.engine.delete(own)
            return
        try:
            self.engine.apply(own, self.desired(svc))
        except MissingReferenceError as e:
            # A node's gateway router or switch is not in the NB yet.
            raise RetryLater(str(e)) from None
