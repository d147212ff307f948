"""The master: informers, work queues and controllers around one NB writer.

Start-up order keeps addresses unique across restarts: wait for the caches,
claim every subnet and address the API already records, repair the NB with one
full sync per kind (which also removes rows of objects deleted while the
master was down), and only then start handling events.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kubernetes import client

from northd_sync import NorthdSync
from ovnkube.annotations import IPAddress, IPNetwork
from ovnkube.config import Config
from ovnkube.informer import Informer
from ovnkube.kubeclient import ResourceAPI, key_of, post_event
from ovnkube.master import topology
from ovnkube.master.allocators import IPPool, SubnetAllocator, join_pool, pod_pool
from ovnkube.master.netpolctl import NetworkPolicyController
from ovnkube.master.nodes import OWNER_TYPE as NODE_OWNER
from ovnkube.master.nodes import NodeController
from ovnkube.master.pods import OWNER_TYPE as POD_OWNER
from ovnkube.master.pods import PodController, network_ips
from ovnkube.master.servicectl import OWNER_TYPE as SERVICE_OWNER
from ovnkube.master.servicectl import ServiceController
from ovnkube.master.services import wants_lbs
from ovnkube.workqueue import WorkQueue

log = logging.getLogger(__name__)


class Master:
    def __init__(self, config: Config, api: client.ApiClient, engine: NorthdSync,
                 workers: int = 8, resync_period: float = 600.0) -> None:
        self.config = config
        self.api = api
        self.engine = engine
        self.subnets = SubnetAllocator(config.cluster_subnets)
        self.join_ips: IPPool = join_pool(config.join_subnet)
        self._pools: dict[str, IPPool] = {}
        self._pools_lock = threading.Lock()
        self.nodes = Informer(ResourceAPI(api, "/api/v1/nodes", "Node"), resync_period)
        self.pods = Informer(ResourceAPI(api, "/api/v1/pods", "Pod"), resync_period)
        self.services = Informer(ResourceAPI(api, "/api/v1/services", "Service"),
                                 resync_period)
        self.slices = Informer(ResourceAPI(
            api, "/apis/discovery.k8s.io/v1/endpointslices", "EndpointSlice"), resync_period)
        self.namespaces = Informer(ResourceAPI(api, "/api/v1/namespaces", "Namespace"),
                                   resync_period)
        self.policies = Informer(ResourceAPI(
            api, "/apis/networking.k8s.io/v1/networkpolicies", "NetworkPolicy"), resync_period)
        self.informers = [self.nodes, self.pods, self.services, self.slices, self.namespaces,
                          self.policies]
        self.node_controller = NodeController(self)
        self.pod_controller = PodController(self)
        self.service_controller = ServiceController(self)
        core = client.CoreV1Api(api)
        self.netpol_controller = NetworkPolicyController(
            engine, self.pods, self.namespaces, self.policies, pod_ips=network_ips,
            post_event=lambda obj, reason, msg: post_event(core, obj, reason, msg),
            families=sorted({cs.cidr.version for cs in config.cluster_subnets}))
        self.pod_controller.port_listeners.append(self.netpol_controller.port_ready)
        self.pod_controller.port_gone_listeners.append(self.netpol_controller.port_gone)
        self.node_queue = WorkQueue("node", self.node_controller.reconcile, workers=2)
        self.pod_queue = WorkQueue("pod", self.pod_controller.reconcile, workers=workers)
        self.service_queue = WorkQueue("service", self.service_controller.reconcile,
                                       workers=max(2, workers // 2))
        self.queues = [self.node_queue, self.pod_queue, self.service_queue,
                       self.netpol_controller.queue]
        self.nodes.add_handler(self.node_controller.on_event)
        self.nodes.add_handler(self.service_controller.on_node)
        self.pods.add_handler(self.pod_controller.on_event)
        self.services.add_handler(self.service_controller.on_service)
        self.slices.add_handler(self.service_controller.on_slice)
        self.pods.add_handler(self.netpol_controller.on_pod)
        self.namespaces.add_handler(self.netpol_controller.on_namespace)
        self.policies.add_handler(self.netpol_controller.on_policy)
        self.ready = threading.Event()

    # --- per-node address pools ------------------------------------------
    def add_pool(self, node: str, subnet: IPNetwork) -> IPPool:
        with self._pools_lock:
            pool = self._pools.get(node)
            if pool is None or pool.subnet != subnet:
                pool = pod_pool(subnet)
                self._pools[node] = pool
            return pool

    def pool_for(self, node: str) -> IPPool | None:
        with self._pools_lock:
            return self._pools.get(node)

    def drop_pool(self, node: str) -> None:
        with self._pools_lock:
            self._pools.pop(node, None)

    def pools(self) -> list[tuple[str, IPPool]]:
        with self._pools_lock:
            return list(self._pools.items())

    def pod_ip(self, key: str) -> IPAddress | None:
        for _, pool in self.pools():
            ip = pool.get(key)
            if ip is not None:
                return ip
        return None

    # --- running -----------------------------------------------------------
    def start(self, sync_timeout: float = 120.0) -> None:
        for inf in self.informers:
            inf.start()
        for inf in self.informers:
            if not inf.wait_synced(sync_timeout):
                raise TimeoutError(f"{inf.resource.kind} cache not synced in {sync_timeout}s")
        nodes, pods = self.nodes.items(), self.pods.items()
        self.node_controller.mark_existing(nodes)
        self.pod_controller.mark_existing(pods)
        self.initial_sync(nodes, pods)
        for q in self.queues:
            q.start()
        self.ready.set()
        log.info("master started: %d nodes, %d pods", len(nodes), len(pods))

    def initial_sync(self, nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
        self.engine.sync(topology.CLUSTER_OWNER_TYPE,
                         {topology.CLUSTER_OWNER: topology.cluster_rows(self.config)})
        node_rows: dict[str, Any] = {}
        for n in nodes:
            rows = self.node_controller.desired(n)
            if rows is not None:
                node_rows[n["metadata"]["name"]] = rows
        self.engine.sync(NODE_OWNER, node_rows)
        pod_rows: dict[str, Any] = {}
        for p in pods:
            key = f"{p['metadata']['namespace']}/{p['metadata']['name']}"
            rows = self.pod_controller.desired(p)
            if rows:
                pod_rows[key] = rows
        self.engine.sync(POD_OWNER, pod_rows)
        self.pod_controller.synced(pod_rows)
        self.engine.sync(SERVICE_OWNER, {
            key_of(svc): self.service_controller.desired(svc)
            for svc in self.services.items() if wants_lbs(svc)})
        # Policies last: their port groups name the pods' ports synced above.
        self.netpol_controller.ports_synced(pod_rows)
        for owner_type, desired in self.netpol_controller.desired_by_type().items():
            self.engine.sync(owner_type, desired)

    def stop(self) -> None:
        for inf in self.informers:
            inf.stop()
        for q in self.queues:
            q.stop()
