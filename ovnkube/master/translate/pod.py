"""A pod on the pod network: whether it is on it, the addresses its
annotation records, and its logical switch port. Pure."""

from __future__ import annotations

import logging
from typing import Any

from northd_sync.rows import LogicalSwitchPort, Row
from ovnkube import names
from ovnkube.annotations import POD_NETWORKS, AnnotationError, PodNetwork
from ovnkube.kubeclient import Obj, get_annotations

log = logging.getLogger(__name__)

OWNER_TYPE = "Pod"


def wants_network(pod: Obj) -> bool:
    """Pods on the pod network: scheduled, not hostNetwork, not finished."""
    spec, status = pod.get("spec", {}), pod.get("status", {})
    if spec.get("hostNetwork") or not spec.get("nodeName"):
        return False
    # A terminating pod keeps its port until it is gone: kubelet still has
    # to tear it down through CNI DEL.
    return status.get("phase") not in ("Succeeded", "Failed")


def parse_recorded_network(pod: Obj) -> PodNetwork | None:
    """The pod-networks annotation (None: absent); AnnotationError if malformed."""
    raw = get_annotations(pod).get(POD_NETWORKS)
    return None if raw is None else PodNetwork.parse(raw)


def recorded_network(pod: Obj) -> PodNetwork | None:
    """The pod-networks annotation; None when absent or malformed (logged)."""
    try:
        return parse_recorded_network(pod)
    except AnnotationError as e:
        log.warning("pod %s: ignoring %s", pod["metadata"]["name"], e)
        return None


def network_ips(pod: Obj) -> tuple[str, ...] | None:
    """The addresses of a pod on the pod network (None: not on it, or none yet)."""
    if not wants_network(pod):
        return None
    net = recorded_network(pod)
    return tuple(str(i.ip) for i in net.ip_addresses) if net else None


def pod_rows(pod: dict[str, Any], node: str, net: PodNetwork) -> list[Row]:
    md = pod["metadata"]
    addrs = " ".join([net.mac_address, *(str(i.ip) for i in net.ip_addresses)])
    return [LogicalSwitchPort(
        names.pod_port(md["namespace"], md["name"]), switch=node,
        addresses=[addrs], port_security=[addrs],
        options={"requested-chassis": node, "iface-id-ver": md.get("uid", "")},
        external_ids={"namespace": md["namespace"], "pod": "true"})]
