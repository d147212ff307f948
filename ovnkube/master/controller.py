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
from ovnkube.config import Config
from ovnkube.informer import Informer
from ovnkube.kubeclient import ResourceAPI, key_of, post_event
from ovnkube.master.allocators import IPPool, NodePools, SubnetAllocator, join_pool
from ovnkube.master.controllers.netpol import NetworkPolicyController
from ovnkube.master.controllers.node import NodeController
from ovnkube.master.controllers.node_tracker import NodeTracker
from ovnkube.master.controllers.pod import PodController
from ovnkube.master.controllers.service import ServiceController
from ovnkube.master.translate import cluster, node, pod, service
from ovnkube.master.translate.pod import network_ips

log = logging.getLogger(__name__)


class Master:
    """Builds the informers, allocators and controllers and wires them: each
    controller gets only what it uses, and they reach each other through the
    callbacks set up here."""

    def __init__(self, config: Config, api: client.ApiClient, engine: NorthdSync,
                 workers: int = 8, resync_period: float = 600.0) -> None:
        self.config = config
        self.engine = engine
        self.subnets = SubnetAllocator(config.cluster_subnets)
        self.join_ips: IPPool = join_pool(config.join_subnet)
        self.pools = NodePools()
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
        self.tracker = NodeTracker(self.nodes, self.subnets, self.join_ips,
                                   config.join_subnet.prefixlen)
        self.pod_controller = PodController(api, engine, self.pods, self.pools, workers)
        self.node_controller = NodeController(
            config, api, engine, self.nodes, self.subnets, self.join_ips, self.pools,
            self.tracker, on_subnet_ready=self.pod_controller.wake_waiting)
        self.service_controller = ServiceController(
            engine, self.services, self.slices, self.tracker, workers=max(2, workers // 2))
        core = client.CoreV1Api(api)
        self.netpol_controller = NetworkPolicyController(
            engine, self.pods, self.namespaces, self.policies, pod_ips=network_ips,
            post_event=lambda obj, reason, msg: post_event(core, obj, reason, msg),
            families=sorted({cs.cidr.version for cs in config.cluster_subnets}))
        self.pod_controller.port_listeners.append(self.netpol_controller.port_ready)
        self.pod_controller.port_gone_listeners.append(self.netpol_controller.port_gone)
        self.queues = [self.node_controller.queue, self.pod_controller.queue,
                       self.service_controller.queue, self.netpol_controller.queue]
        self.nodes.add_handler(self.node_controller.on_event)
        self.nodes.add_handler(self.service_controller.on_node)
        self.pods.add_handler(self.pod_controller.on_event)
        self.services.add_handler(self.service_controller.on_service)
        self.slices.add_handler(self.service_controller.on_slice)
        self.pods.add_handler(self.netpol_controller.on_pod)
        self.namespaces.add_handler(self.netpol_controller.on_namespace)
        self.policies.add_handler(self.netpol_controller.on_policy)
        self.ready = threading.Event()

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
        self.engine.sync(cluster.OWNER_TYPE, {cluster.OWNER: cluster.cluster_rows(self.config)})
        node_rows: dict[str, Any] = {}
        for n in nodes:
            rows = self.node_controller.desired(n)
            if rows is not None:
                node_rows[n["metadata"]["name"]] = rows
        self.engine.sync(node.OWNER_TYPE, node_rows)
        pod_rows: dict[str, Any] = {}
        for p in pods:
            key = f"{p['metadata']['namespace']}/{p['metadata']['name']}"
            rows = self.pod_controller.desired(p)
            if rows:
                pod_rows[key] = rows
        self.engine.sync(pod.OWNER_TYPE, pod_rows)
        self.pod_controller.synced(pod_rows)
        self.engine.sync(service.OWNER_TYPE, {
            key_of(svc): self.service_controller.desired(svc)
            for svc in self.services.items() if service.wants_lbs(svc)})
        # Policies last: their port groups name the pods' ports synced above.
        self.netpol_controller.ports_synced(pod_rows)
        for owner_type, desired in self.netpol_controller.desired_by_type().items():
            self.engine.sync(owner_type, desired)

    def stop(self) -> None:
        for inf in self.informers:
            inf.stop()
        for q in self.queues:
            q.stop()
