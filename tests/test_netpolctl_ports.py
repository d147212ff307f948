"""Which pods the NetworkPolicy controller puts in port groups: those whose
logical switch port the pod controller has committed (port_ready) and not
deleted since (port_gone), whatever order the informer's events come in.

The controller's desired rows are read straight from it (desired_by_type):
no NB is written here, so its engine is never started."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from northd_sync import NorthdSync, PortGroup
from ovnkube.annotations import POD_NETWORKS
from ovnkube.informer import Informer
from ovnkube.kubeclient import ResourceAPI
from ovnkube.master.controllers.netpol import NetworkPolicyController
from ovnkube.master.translate import netpol
from ovnkube.master.translate.pod import network_ips

KEY = "x/web"
ANNOTATION = ('{"default":{"ip_addresses":["10.244.1.5/24"],"mac_address":"0a:58:0a:f4:01:05",'
              '"gateway_ips":["10.244.1.1"]}}')


def controller() -> NetworkPolicyController:
    api = client.ApiClient()
    inf = Informer(ResourceAPI(api, "/api/v1/pods", "Pod"))
    return NetworkPolicyController(NorthdSync("tcp:127.0.0.1:1"), inf, inf, inf,
                                   pod_ips=network_ips, post_event=lambda *a: None)


def pod(rv: str, annotated: bool, uid: str = "u1") -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": "x", "name": "web", "uid": uid, "resourceVersion": rv,
                            "labels": {"app": "web"}}
    if annotated:
        meta["annotations"] = {POD_NETWORKS: ANNOTATION}
    return {"metadata": meta, "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"phase": "Pending"}}


def policy_ports(c: NetworkPolicyController) -> list[str]:
    rows = c.desired_by_type()[netpol.POLICY_OWNER]["x/deny"]
    pg = next(r for r in rows if isinstance(r, PortGroup))
    return sorted(pg.ports)


def with_policy() -> NetworkPolicyController:
    c = controller()
    c.on_namespace("x", None, {"metadata": {"name": "x"}})
    c.on_policy("x/deny", None, {"metadata": {"namespace": "x", "name": "deny"},
                                 "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                                          "policyTypes": ["Ingress"]}})
    return c


def test_a_stale_event_after_port_ready_does_not_lose_the_pod() -> None:
    c = with_policy()
    c.on_pod(KEY, None, pod("1", annotated=False))
    c.port_ready(KEY)  # the LSP is committed before the annotated event arrives
    c.on_pod(KEY, pod("1", False), pod("2", annotated=False))  # e.g. a kubelet status write
    assert policy_ports(c) == []  # no address known yet
    c.on_pod(KEY, pod("2", False), pod("3", annotated=True))
    assert policy_ports(c) == ["x_web"]


def test_a_pod_joins_only_once_its_port_is_committed() -> None:
    c = with_policy()
    c.on_pod(KEY, None, pod("1", annotated=True))
    assert policy_ports(c) == []
    c.port_ready(KEY)
    assert policy_ports(c) == ["x_web"]


def test_a_new_pod_of_the_same_name_waits_for_its_own_port() -> None:
    c = with_policy()
    c.on_pod(KEY, None, pod("1", annotated=True))
    c.port_ready(KEY)
    c.on_pod(KEY, pod("1", True), None)
    c.port_gone(KEY)
    assert policy_ports(c) == []
    # Recreated (a StatefulSet's pod): an informer relist may show it
    # annotated before the pod controller has committed its new port.
    c.on_pod(KEY, None, pod("5", annotated=True, uid="u2"))
    assert policy_ports(c) == []
    c.port_ready(KEY)
    assert policy_ports(c) == ["x_web"]


def test_port_gone_takes_a_finished_pod_out() -> None:
    c = with_policy()
    c.on_pod(KEY, None, pod("1", annotated=True))
    c.port_ready(KEY)
    finished = pod("2", annotated=True)
    finished["status"]["phase"] = "Succeeded"
    c.on_pod(KEY, pod("1", True), finished)
    c.port_gone(KEY)
    assert policy_ports(c) == []
