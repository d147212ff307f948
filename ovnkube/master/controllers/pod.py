"""The pod controller: an IP from the node's subnet, the pod-networks
annotation, then the pod's logical switch port.

Order matters: the annotation is written before the port (the CNI server
waits for it), and no port is made for a pod that has no address. A pod that
is deleted or has completed loses its port and its address.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future

from kubernetes import client

from northd_sync import ApplyResult, NorthdSync
from northd_sync.rows import Row
from ovnkube import names
from ovnkube.annotations import POD_NETWORKS, AnnotationError, PodNetwork, mac_from_ip
from ovnkube.informer import Informer
from ovnkube.kubeclient import Obj, patch_annotations, pod_path, post_event, split_key
from ovnkube.master.allocators import AllocationError, IPPool, NodePools
from ovnkube.master.translate.cluster import owner
from ovnkube.master.translate.pod import (
    OWNER_TYPE,
    parse_recorded_network,
    pod_rows,
    recorded_network,
    wants_network,
)
from ovnkube.workqueue import RetryLater, WorkQueue

log = logging.getLogger(__name__)


class PodController:
    def __init__(self, api: client.ApiClient, engine: NorthdSync, pods: Informer,
                 pools: NodePools, workers: int = 8) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.engine = engine
        self.pods = pods
        self.pools = pools
        # node -> pod keys waiting for an address there
        self._waiting: dict[str, set[str]] = {}
        # pod key -> rows last handed to the NB writer: most pod events
        # (status, our own annotation) change nothing in OVN.
        self._applied: dict[str, tuple[Row, ...]] = {}
        self._lock = threading.Lock()
        #: called with a pod key once its logical switch port is committed
        self.port_listeners: list[Callable[[str], None]] = []  # a pod's LSP is committed
        self.port_gone_listeners: list[Callable[[str], None]] = []  # ... is deleted
        self.queue = WorkQueue("pod", self.reconcile, workers=workers)

    def on_event(self, key: str, old: Obj | None, new: Obj | None) -> None:
        if old is new:  # periodic resync: let the NB writer check for drift
            with self._lock:
                self._applied.pop(key, None)
        self.queue.add(key)

    def mark_existing(self, pods: list[Obj]) -> None:
        """Before any allocation: claim the addresses live pods already have."""
        for pod in pods:
            if not wants_network(pod):
                continue
            net = recorded_network(pod)
            pool = self.pools.get(pod["spec"]["nodeName"])
            if net is None or pool is None:
                continue
            key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
            for ip in net.ip_addresses:
                if ip.ip in pool.subnet:
                    try:
                        pool.mark(key, ip.ip)
                    except AllocationError as e:
                        log.error("pod %s: %s", key, e)

    def desired(self, pod: Obj) -> list[Row] | None:
        """The rows a pod should have now, or None if it has no address yet."""
        if not wants_network(pod):
            return []
        net = recorded_network(pod)
        node = pod["spec"]["nodeName"]
        pool = self.pools.get(node)
        if net is None or pool is None:
            return None
        return pod_rows(pod, node, net)

    def reconcile(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None or not wants_network(pod):
            self._forget(key)
            return
        node = pod["spec"]["nodeName"]
        pool = self.pools.get(node)
        if pool is None:
            raise RetryLater(f"node {node} has no subnet yet")
        net = self._ensure_address(key, pod, node, pool)
        if self.pods.get(key) is None:  # deleted meanwhile: undo
            self._forget(key)
            return
        rows = tuple(pod_rows(pod, node, net))
        with self._lock:
            if self._applied.get(key) == rows:
                return
            self._applied[key] = rows
        # Do not hold a worker while the NB commits: many pods then share one
        # transaction. A failed commit brings the pod back with backoff.
        fut = self.engine.apply(owner(OWNER_TYPE, key), rows, wait=False)
        fut.add_done_callback(lambda f: self._committed(key, rows, f))

    def _committed(self, key: str, rows: tuple[Row, ...], fut: Future[ApplyResult]) -> None:
        err = fut.exception()
        if err is not None:
            with self._lock:
                if self._applied.get(key) == rows:
                    del self._applied[key]
            self.queue.retry(key, err)
            return
        for listener in self.port_listeners:
            listener(key)

    def _ensure_address(self, key: str, pod: Obj, node: str, pool: IPPool) -> PodNetwork:
        try:
            net = parse_recorded_network(pod)
        except AnnotationError as e:
            # Someone wrote a bad value: say so on the pod, then replace it.
            post_event(self.core, pod, "ErrorParsingPodAnnotation",
                       f"{e}; assigning a new address")
            net = None
        if net is not None and all(ip.ip in pool.subnet for ip in net.ip_addresses):
            try:
                for addr in net.ip_addresses:
                    pool.mark(key, addr.ip)
                return net
            except AllocationError as e:
                # Two live pods claim one address: the later one gets a new one.
                post_event(self.core, pod, "ErrorAssigningIP", str(e))
        try:
            ip = pool.allocate(key)
        except AllocationError as e:
            with self._lock:
                self._waiting.setdefault(node, set()).add(key)
            post_event(self.core, pod, "ErrorAllocatingPod",
                       f"no IP address left for the pod on node {node}: {e}")
            raise RetryLater(str(e)) from None
        subnet = pool.subnet
        net = PodNetwork(
            ip_addresses=(ipaddress.ip_interface(f"{ip}/{subnet.prefixlen}"),),
            mac_address=mac_from_ip(ip),
            gateway_ips=(names.node_gateway_ip(subnet),))
        ns, name = split_key(key)
        try:
            patch_annotations(self.api, pod_path(ns, name),
                              {POD_NETWORKS: net.to_annotation()},
                              resource_version=None)
        except client.ApiException as e:
            pool.release(key)
            if e.status == 404:
                raise RetryLater(f"pod {key} is gone") from None
            raise
        return net

    def synced(self, rows_by_key: dict[str, list[Row]]) -> None:
        """What the start-up sync left in the NB, so later events skip no-ops."""
        with self._lock:
            self._applied = {k: tuple(v) for k, v in rows_by_key.items()}

    def _forget(self, key: str) -> None:
        with self._lock:
            had_rows = self._applied.pop(key, None) is not None
        if had_rows:  # pods that never had a port (hostNetwork, ...) cost nothing
            self.engine.delete(owner(OWNER_TYPE, key))
        for listener in self.port_gone_listeners:
            listener(key)
        for node in self.pools.release(key):
            self.wake_waiting(node)

    def wake_waiting(self, node: str) -> None:
        """Queue again the pods waiting for an address on `node`."""
        with self._lock:
            keys = self._waiting.pop(node, set())
        for k in keys:
            self.queue.add(k)
