"""`ovnkube master` as a real process, a real kube-apiserver and a real NB."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from localcluster.kube import KubeControlPlane
from localcluster.ovn import OvnCentral
from localcluster.procs import DaemonSet
from ovnkube.annotations import (
    NODE_SUBNETS,
    POD_NETWORKS,
    AnnotationError,
    PodNetwork,
    parse_node_subnets,
)
from tests.master_helpers import KubeObjects, eventually, lsps, start_master

OWNER_TYPE = "k8s.ovn.org/owner-type"


@pytest.fixture
def kobj(kube_api: KubeControlPlane) -> Iterator[KubeObjects]:
    k = KubeObjects(kube_api)
    try:
        yield k
    finally:
        k.cleanup()


def _run_master(masters: DaemonSet, kube_api: KubeControlPlane, central: OvnCentral,
                workdir: Path, name: str = "master", *extra: str):  # type: ignore[no-untyped-def]
    d = start_master(kube_api, central, workdir, name, *extra)
    masters.daemons.append(d)
    return d


def _annotated(k: KubeObjects, ns: str) -> dict[str, PodNetwork]:
    out = {}
    for p in k.pods(ns):
        raw = (p["metadata"].get("annotations") or {}).get(POD_NETWORKS)
        if raw:
            with contextlib.suppress(AnnotationError):  # not (yet) the master's
                out[p["metadata"]["name"]] = PodNetwork.parse(raw)
    return out


def _node_subnet(k: KubeObjects, node: str) -> ipaddress.IPv4Network | None:
    raw = (k.node_obj(node)["metadata"].get("annotations") or {}).get(NODE_SUBNETS)
    return parse_node_subnets(raw)[0] if raw else None  # type: ignore[return-value]


def test_topology_for_three_nodes(kube_api: KubeControlPlane, ovn_central: OvnCentral,
                                  kobj: KubeObjects, masters: DaemonSet, workdir: Path) -> None:
    nodes = [kobj.node(f"n{i}", gateway_ip=f"172.18.0.{i + 10}") for i in range(3)]
    _run_master(masters, kube_api, ovn_central, workdir)
    subnets = {n: eventually(lambda n=n: _node_subnet(kobj, n), what=f"subnet of {n}")
               for n in nodes}
    assert len(set(subnets.values())) == 3
    assert all(s.subnet_of(ipaddress.ip_network("10.244.0.0/16")) and s.prefixlen == 24
               for s in subnets.values())
    eventually(lambda: all(f"GR_{n}" in ovn_central.nbctl("lr-list") for n in nodes),
               what="gateway routers")
    show = ovn_central.nbctl("show")
    for n in nodes:
        s = subnets[n]
        gw = s.network_address + 1
        assert "switch " in show and f"({n})" in show
        assert f"port rtos-{n}" in show and f'networks: ["{gw}/24"]' in show
        assert f"port k8s-{n}" in show
        assert f"port stor-{n}" in show
        assert f"router-port=rtos-{n}" in ovn_central.nbctl("lsp-get-options", f"stor-{n}")
        assert f"(GR_{n})" in show and f"(ext_{n})" in show
        assert f"port jtor-GR_{n}" in show
        assert ovn_central.nbctl("get", "Logical_Router", f"GR_{n}", "options:chassis"
                                 ).strip().strip('"') == f"chassis-{n}"
        nat = ovn_central.nbctl("lr-nat-list", f"GR_{n}")
        assert "snat" in nat and "172.18.0." in nat and "10.244.0.0/16" in nat
        assert f"chassis-{n}" in ovn_central.nbctl("lrp-get-gateway-chassis", f"rtos-{n}")
    routes = ovn_central.nbctl("lr-route-list", "ovn_cluster_router")
    for n in nodes:
        assert str(subnets[n]) in routes and "src-ip" in routes
    assert "(join)" in show and "port rtoj-ovn_cluster_router" in show
    assert "clusterLBGroup" in ovn_central.nbctl("--bare", "--columns=name", "list",
                                                  "Load_Balancer_Group")
    # Every row we made carries the ownership tags.
    for name, row in lsps(ovn_central).items():
        assert row["external_ids"].get(OWNER_TYPE) in ("Cluster", "Node"), name
    # Deleting a node frees its rows.
    kobj.core.delete_node(nodes[0])
    eventually(lambda: f"({nodes[0]})" not in ovn_central.nbctl("show"), what="node rows gone")
    assert f"(GR_{nodes[0]})" not in ovn_central.nbctl("show")
    assert f"({nodes[1]})" in ovn_central.nbctl("show")


def test_200_pods_unique_ips_and_freed(kube_api: KubeControlPlane, ovn_central: OvnCentral,
                                       kobj: KubeObjects, masters: DaemonSet,
                                       workdir: Path) -> None:
    # /25 per node: 124 addresses each. 2 nodes x 100 pods, delete 50 per node,
    # add 50 per node: only fits if deleted pods' addresses were freed.
    _run_master(masters, kube_api, ovn_central, workdir, "master",
                "--cluster-subnets=10.244.0.0/16/25")
    nodes = [kobj.node("a"), kobj.node("b")]
    ns = kobj.namespace("burst")
    for i in range(200):
        kobj.pod(ns, f"p{i}", nodes[i % 2])

    def all_done(count: int):  # type: ignore[no-untyped-def]
        ann = _annotated(kobj, ns)
        ports = lsps(ovn_central)
        if len(ann) < count:
            return None
        if sum(1 for n in ports if n.startswith(f"{ns}_")) != count:
            return None
        return ann, ports

    ann, ports = eventually(lambda: all_done(200), timeout=180, what="200 pods wired")
    subnets = {n: _node_subnet(kobj, n) for n in nodes}
    ips = [str(net.ip_addresses[0].ip) for net in ann.values()]
    assert len(set(ips)) == 200
    for i in range(200):
        net = ann[f"p{i}"]
        ip = net.ip_addresses[0]
        subnet = subnets[nodes[i % 2]]
        assert subnet is not None and ip.ip in subnet
        assert ip.ip not in (subnet.network_address + 1, subnet.network_address + 2)
        assert net.gateway_ips == (subnet.network_address + 1,)
        lsp = ports[f"{ns}_p{i}"]
        assert lsp["addresses"] == f"{net.mac_address} {ip.ip}"
        assert lsp["external_ids"][OWNER_TYPE] == "Pod"
    for i in range(200):
        if i % 4 < 2:  # half of each node's pods
            kobj.delete_pod(ns, f"p{i}")
    eventually(lambda: sum(1 for n in lsps(ovn_central) if n.startswith(f"{ns}_")) == 100,
               timeout=120, what="deleted pods' ports gone")
    for i in range(200, 300):
        kobj.pod(ns, f"p{i}", nodes[i % 2])
    ann, _ = eventually(lambda: all_done(200), timeout=180, what="refill wired")
    assert len({str(n.ip_addresses[0].ip) for n in ann.values()}) == 200


def test_master_killed_mid_burst(kube_api: KubeControlPlane, ovn_central: OvnCentral,
                                 kobj: KubeObjects, masters: DaemonSet, workdir: Path) -> None:
    nodes = [kobj.node("k1"), kobj.node("k2")]
    ns = kobj.namespace("kill")
    m = _run_master(masters, kube_api, ovn_central, workdir, "m1")
    eventually(lambda: all(_node_subnet(kobj, n) for n in nodes), what="node subnets")
    for i in range(120):
        kobj.pod(ns, f"p{i}", nodes[i % 2])
        if i == 40:
            eventually(lambda: len(_annotated(kobj, ns)) >= 10, what="some pods annotated")
    os.killpg(m.pid, signal.SIGKILL)
    m.proc.wait()  # type: ignore[union-attr]
    # While the master is down: some pods go away, more arrive.
    for i in range(0, 30):
        kobj.delete_pod(ns, f"p{i}")
    for i in range(120, 140):
        kobj.pod(ns, f"p{i}", nodes[i % 2])
    _run_master(masters, kube_api, ovn_central, workdir, "m2")

    def settled():  # type: ignore[no-untyped-def]
        live = {p["metadata"]["name"] for p in kobj.pods(ns)
                if "deletionTimestamp" not in p["metadata"]}
        ann = _annotated(kobj, ns)
        ports = {n for n in lsps(ovn_central) if n.startswith(f"{ns}_")}
        if set(ann) >= live and ports == {f"{ns}_{p}" for p in live}:
            return live, ann
        return None

    live, ann = eventually(settled, timeout=180, what="pods settled after restart")
    ips = [str(ann[p].ip_addresses[0].ip) for p in live]
    assert len(ips) == len(set(ips)) == 110


def test_two_masters_one_leads(kube_api: KubeControlPlane, ovn_central: OvnCentral,
                               kobj: KubeObjects, masters: DaemonSet, workdir: Path) -> None:
    lease = f"ovnkube-test-{kobj.suffix}"
    opts = (f"--lease-name={lease}", "--lease-duration=4", "--renew-deadline=3",
            "--retry-period=0.5")
    a = _run_master(masters, kube_api, ovn_central, workdir, "ma", *opts, "--identity=ma")
    b = _run_master(masters, kube_api, ovn_central, workdir, "mb", *opts, "--identity=mb")
    coord = client.CoordinationV1Api(kobj.api)
    holder = eventually(lambda: coord.read_namespaced_lease(lease, "kube-system")
                        .spec.holder_identity, what="a leader")
    leader, standby = (a, b) if holder == "ma" else (b, a)
    node = kobj.node("le")
    ns = kobj.namespace("le")
    kobj.pod(ns, "before", node)
    eventually(lambda: "before" in _annotated(kobj, ns), what="leader handles pods")
    # Only the leader writes: the standby never logged a start.
    assert "master started" not in standby.log_path.read_text()
    os.killpg(leader.pid, signal.SIGKILL)
    kobj.pod(ns, "after", node)
    eventually(lambda: "after" in _annotated(kobj, ns), timeout=60, what="standby took over")
    assert coord.read_namespaced_lease(lease, "kube-system").spec.holder_identity == (
        "mb" if holder == "ma" else "ma")
    eventually(lambda: f"{ns}_after" in lsps(ovn_central), what="port of the new pod")


def test_subnet_exhaustion_event_and_recovery(kube_api: KubeControlPlane,
                                              ovn_central: OvnCentral, kobj: KubeObjects,
                                              masters: DaemonSet, workdir: Path) -> None:
    # /29 per node: 4 pod addresses.
    _run_master(masters, kube_api, ovn_central, workdir, "master",
                "--cluster-subnets=10.244.0.0/16/29")
    node = kobj.node("x")
    ns = kobj.namespace("full")
    for i in range(5):
        kobj.pod(ns, f"p{i}", node)
    eventually(lambda: len(_annotated(kobj, ns)) == 4, what="four pods annotated")
    (left,) = {f"p{i}" for i in range(5)} - set(_annotated(kobj, ns))

    def event():  # type: ignore[no-untyped-def]
        evs = kobj.core.list_namespaced_event(ns).items
        return [e for e in evs if e.involved_object.name == left
                and e.reason == "ErrorAllocatingPod"]

    (ev, *_) = eventually(event, what="an Event on the pod left out")
    assert "no IP address left" in ev.message and node in ev.message
    assert f"{ns}_{left}" not in lsps(ovn_central)  # nothing half-made
    victim = next(p for p in _annotated(kobj, ns))
    kobj.delete_pod(ns, victim)
    eventually(lambda: left in _annotated(kobj, ns), timeout=90, what="left-out pod served")
    eventually(lambda: f"{ns}_{left}" in lsps(ovn_central), what="its port")


def test_bad_config_is_rejected_by_name() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "ovnkube.cli", "master", "--nb-address=unix:/x",
         "--cluster-subnets=10.244.0.0/16/40"], capture_output=True, text=True,
        cwd=str(Path(__file__).resolve().parent.parent))
    assert res.returncode == 2
    assert "--cluster-subnets '10.244.0.0/16/40'" in res.stderr
    res = subprocess.run([sys.executable, "-m", "ovnkube.cli", "master"], capture_output=True,
                         text=True, cwd=str(Path(__file__).resolve().parent.parent))
    assert res.returncode == 2 and "--nb-address is required" in res.stderr


def test_bad_pod_annotation_gets_event_and_new_address(
        kube_api: KubeControlPlane, ovn_central: OvnCentral, kobj: KubeObjects,
        masters: DaemonSet, workdir: Path) -> None:
    import urllib.request

    from localcluster.procs import free_port
    port = free_port()
    _run_master(masters, kube_api, ovn_central, workdir, "master",
                f"--metrics-bind-address=127.0.0.1:{port}")
    node = kobj.node("bad")
    ns = kobj.namespace("bad")
    kobj.core.create_namespaced_pod(ns, client.V1Pod(
        metadata=client.V1ObjectMeta(name="p", annotations={POD_NETWORKS: "{not json"}),
        spec=client.V1PodSpec(node_name=node, automount_service_account_token=False,
                              containers=[client.V1Container(name="c", image="pause")])))
    eventually(lambda: "p" in _annotated(kobj, ns), what="pod re-annotated")

    def event():  # type: ignore[no-untyped-def]
        return [e for e in kobj.core.list_namespaced_event(ns).items
                if e.reason == "ErrorParsingPodAnnotation"]

    (ev, *_) = eventually(event, what="an Event naming the bad annotation")
    assert "k8s.ovn.org/pod-networks='{not json'" in ev.message
    eventually(lambda: f"{ns}_p" in lsps(ovn_central), what="its port")
    # The NB writer's counters are scraped from the master.
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'northd_sync_transactions_total{result="success"}' in body
    assert "northd_sync_commit_latency_seconds_bucket" in body


def test_unreachable_nb_is_named(kube_api: KubeControlPlane, workdir: Path) -> None:
    from localcluster.procs import free_port
    remote = f"tcp:127.0.0.1:{free_port()}"
    res = subprocess.run(
        [sys.executable, "-m", "ovnkube.cli", "master", f"--nb-address={remote}",
         f"--k8s-kubeconfig={kube_api.kubeconfig}", "--no-leader-elect", "--nb-timeout=2"],
        capture_output=True, text=True, timeout=60,
        cwd=str(Path(__file__).resolve().parent.parent))
    assert res.returncode == 1
    assert f"cannot use the NB database at {remote}" in res.stderr


def test_bad_node_annotations_get_events_and_are_ignored(
        kube_api: KubeControlPlane, ovn_central: OvnCentral, kobj: KubeObjects,
        masters: DaemonSet, workdir: Path) -> None:
    """Every node annotation the master reads, malformed: an Event on the node
    naming each one, the node still gets its subnet, switch and management
    port, no gateway router from a bad chassis, and the master does not crash;
    once the values are fixed, the gateway router follows."""
    import json

    from ovnkube import names
    from ovnkube.annotations import (
        L3_GATEWAY_CONFIG,
        NODE_CHASSIS_ID,
        NODE_GR_LRP_IFADDR,
        NODE_MGMT_PORT_MAC,
        L3GatewayConfig,
        mac_from_ip,
    )
    d = _run_master(masters, kube_api, ovn_central, workdir, "master")
    name = f"badann-{kobj.suffix}"
    bad = {NODE_SUBNETS: '{"default": []}', NODE_GR_LRP_IFADDR: '{"ipv4": 5}',
           NODE_CHASSIS_ID: 'c1" -- destroy', L3_GATEWAY_CONFIG: '{"default": 1}',
           NODE_MGMT_PORT_MAC: "not-a-mac"}
    kobj.core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name,
                                                                      annotations=bad)))
    kobj.nodes.append(name)

    def events() -> dict[str, str]:
        return {e.message.split("=")[0].removeprefix("annotation "): e.message
                for e in kobj.core.list_namespaced_event("default").items
                if e.involved_object.name == name and e.reason == "ErrorParsingNodeAnnotation"}

    got = eventually(lambda: (lambda ev: ev if len(ev) == len(bad) else None)(events()),
                     what="an Event per bad node annotation")
    for key, value in bad.items():
        assert f"annotation {key}={value!r}" in got[key], got[key]
    # Allocated anew and written back, valid; the node's rows are there.
    sn = eventually(lambda: _node_subnet(kobj, name), what="a valid subnet")
    assert sn is not None
    mgmt = names.node_mgmt_ip(sn)
    eventually(lambda: names.mgmt_port(name) in lsps(ovn_central), what="management port")
    assert lsps(ovn_central)[names.mgmt_port(name)]["addresses"] == (
        f"{mac_from_ip(mgmt)} {mgmt}")
    routers = ovn_central.nbctl("--bare", "--columns=name", "list", "Logical_Router").split()
    assert names.gateway_router(name) not in routers
    # Fixed: the gateway router follows; no Event about the fixed values again.
    gw = L3GatewayConfig("shared", f"br-ex_{name}", "02:00:00:00:00:09",
                         (ipaddress.ip_interface("172.18.0.9/24"),),
                         (ipaddress.ip_address("172.18.0.1"),))
    kobj.core.patch_node(name, {"metadata": {"annotations": {
        NODE_CHASSIS_ID: f"chassis-{name}", L3_GATEWAY_CONFIG: gw.to_annotation(),
        NODE_MGMT_PORT_MAC: "0a:58:0a:f4:09:02"}}})
    eventually(lambda: names.gateway_router(name) in ovn_central.nbctl(
        "--bare", "--columns=name", "list", "Logical_Router").split(), what="gateway router")
    eventually(lambda: lsps(ovn_central)[names.mgmt_port(name)]["addresses"]
               == f"0a:58:0a:f4:09:02 {mgmt}", what="management port MAC from the annotation")
    assert len(events()) == len(bad)
    assert d.alive()
    log_text = d.log_path.read_text()
    assert "Traceback" not in log_text, log_text[-3000:]
    assert json.loads(kobj.node_obj(name)["metadata"]["annotations"][NODE_GR_LRP_IFADDR])
