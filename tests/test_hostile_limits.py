"""Kubernetes objects at their limits, through the master's pure translation
(and, for the pod with a 253-character name and the largest Service, into a
real NB through northd_sync): a Service with 100 ports, EndpointSlices of
1,000 endpoints (the API's maximum per slice), a pod name of 253 characters
in a namespace of 63."""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster.ovn import OvnCentral
from northd_sync import (
    ID_KEY,
    LoadBalancer,
    LoadBalancerGroup,
    LogicalSwitch,
    LogicalSwitchPort,
    NorthdSync,
)
from ovnkube import names
from ovnkube.annotations import POD_NETWORKS, PodNetwork, mac_from_ip
from ovnkube.master.translate.cluster import owner
from ovnkube.master.translate.pod import OWNER_TYPE as POD_OWNER
from ovnkube.master.translate.pod import parse_recorded_network, pod_rows
from ovnkube.master.translate.service import service_rows
from tests.northd_helpers import nb_list

NODES = {f"node-{i}": [f"172.18.0.{10 + i}"] for i in range(10)}
N_PORTS, N_ENDPOINTS = 100, 1000
LONG_NS = "n" * 63
LONG_POD = ("p" * 62 + ".") * 4 + "p"  # 253 characters, a valid DNS subdomain


def big_service() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A NodePort Service with 100 ports (TCP and UDP) and, per port, one
    EndpointSlice of 1,000 endpoints spread over ten nodes."""
    ports = [{"name": f"p{i}", "port": 1000 + i, "protocol": "TCP" if i % 2 else "UDP",
              "targetPort": 2000 + i, "nodePort": 30000 + i} for i in range(N_PORTS)]
    svc = {"metadata": {"namespace": LONG_NS, "name": "s" * 63},
           "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                    "ports": ports}}
    slices = []
    for p in ports:
        slices.append({
            "addressType": "IPv4",
            "ports": [{"name": p["name"], "port": p["targetPort"], "protocol": p["protocol"]}],
            "endpoints": [{"addresses": [str(ipaddress.ip_address("10.244.0.0") + 256 * (j % 10)
                                             + 3 + j // 10)],
                           "nodeName": f"node-{j % 10}", "conditions": {"ready": True}}
                          for j in range(N_ENDPOINTS)]})
    return svc, slices


def test_service_with_100_ports_and_1000_endpoints_per_slice() -> None:
    svc, slices = big_service()
    t0 = time.monotonic()
    rows = service_rows(svc, slices, NODES)
    took = time.monotonic() - t0
    lbs = {r.name: r for r in rows if isinstance(r, LoadBalancer)}
    ns, name = LONG_NS, "s" * 63
    cluster = {proto: lbs[names.service_lb(ns, name, proto, "cluster")] for proto in ("TCP", "UDP")}
    assert len(cluster["TCP"].vips) == len(cluster["UDP"].vips) == N_PORTS // 2
    for lb in cluster.values():
        for vip, backends in lb.vips.items():
            port = int(vip.rsplit(":", 1)[1])
            got = backends.split(",")
            assert len(got) == len(set(got)) == N_ENDPOINTS, vip
            assert all(b.endswith(f":{port + 1000}") for b in got)
    # Every node's router gets the NodePorts: 100 ports x (node IP + masquerade IP).
    for node, ips in NODES.items():
        nr = [lbs[names.service_lb(ns, name, proto, "node_router", node)] for proto in
              ("TCP", "UDP")]
        vips = {v for lb in nr for v in lb.vips}
        assert {f"{ips[0]}:{30000 + i}" for i in range(N_PORTS)} <= vips
        assert all(len(b.split(",")) == N_ENDPOINTS for lb in nr for b in lb.vips.values())
    # Names and external_ids stay what OVN and our owners expect.
    for lb in lbs.values():
        assert re.fullmatch(r"Service_n{63}/s{63}_(TCP|UDP)_[a-z_]+(_node-\d)?", lb.name)
        assert lb.external_ids["k8s.ovn.org/kind"] == "Service"
        assert all(isinstance(v, str) for v in lb.external_ids.values())
    # Not asserted (tests never judge wall-clock time): 2.8 s on 2 busy cores,
    # 21-26 s before each endpoint address was parsed once.
    print(f"translation of 100 ports x 1,000 endpoints: {took:.1f} s")


def long_pod() -> tuple[dict[str, Any], PodNetwork]:
    net = PodNetwork((ipaddress.ip_interface("10.244.1.5/24"),),
                     mac_from_ip(ipaddress.ip_address("10.244.1.5")),
                     (ipaddress.ip_address("10.244.1.1"),))
    pod = {"metadata": {"namespace": LONG_NS, "name": LONG_POD, "uid": "u" * 36,
                        "annotations": {POD_NETWORKS: net.to_annotation()}},
           "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}
    return pod, net


def test_pod_with_253_character_name_translates() -> None:
    assert len(LONG_POD) == 253
    pod, net = long_pod()
    assert parse_recorded_network(pod) == net
    [lsp] = pod_rows(pod, "n1", net)
    assert isinstance(lsp, LogicalSwitchPort)
    assert lsp.name == names.pod_port(LONG_NS, LONG_POD) == f"{LONG_NS}_{LONG_POD}"
    assert len(lsp.name) == 63 + 1 + 253
    assert lsp.addresses == ("0a:58:0a:f4:01:05 10.244.1.5",) or list(lsp.addresses) == [
        "0a:58:0a:f4:01:05 10.244.1.5"]
    assert lsp.external_ids == {"namespace": LONG_NS, "pod": "true"}


@pytest.fixture
def nb(ovn_central: OvnCentral) -> Iterator[NorthdSync]:
    engine = NorthdSync(ovn_central.nb_unix, timeout=60).start()
    try:
        yield engine
    finally:
        engine.stop()


def test_limits_are_accepted_by_the_nb(ovn_central: OvnCentral, nb: NorthdSync) -> None:
    """The 253-character pod's port and the 100-port Service's load balancers
    (100 VIPs x 1,000 backends each) go into a real NB and read back whole."""
    db = ovn_central.nb_unix
    nb.apply(owner("Cluster", "default"), [LoadBalancerGroup(names.CLUSTER_LB_GROUP)])
    nb.apply(owner("Node", "n1"), [LogicalSwitch("n1", other_config={"subnet": "10.244.1.0/24"})])
    pod, net = long_pod()
    key = f"{LONG_NS}/{LONG_POD}"
    r = nb.apply(owner(POD_OWNER, key), pod_rows(pod, "n1", net))
    assert r.inserted == 1
    [row] = [x for x in nb_list(db, "Logical_Switch_Port", "name", "addresses", "external_ids")
             if x["name"] == f"{LONG_NS}_{LONG_POD}"]
    assert row["external_ids"][ID_KEY] == f"{LONG_NS}_{LONG_POD}"
    assert row["external_ids"]["namespace"] == LONG_NS
    assert ovn_central.nbctl("get", "Logical_Switch_Port", f"{LONG_NS}_{LONG_POD}",
                             "addresses").strip() == '["0a:58:0a:f4:01:05 10.244.1.5"]'
    # A second apply is a no-op: the long key compares equal once stored.
    assert not nb.apply(owner(POD_OWNER, key), pod_rows(pod, "n1", net)).changed

    svc, slices = big_service()
    rows = [x for x in service_rows(svc, slices, {}) if isinstance(x, LoadBalancer)]
    r = nb.apply(owner("Service", f"{LONG_NS}/{'s' * 63}"), rows)
    assert r.inserted == len(rows) == 2  # TCP and UDP cluster LBs (no gateway nodes)
    stored = {x["name"]: x for x in nb_list(db, "Load_Balancer", "name", "vips")}
    for lb in rows:
        vips = stored[lb.name]["vips"]
        assert len(vips) == N_PORTS // 2
        assert all(len(b.split(",")) == N_ENDPOINTS for b in vips.values())
        assert vips == lb.vips
    assert not nb.apply(owner("Service", f"{LONG_NS}/{'s' * 63}"), rows).changed
