"""The node agent and the CNI shim on real OVS (netdev), ovn-controller, OVN
central and kube-apiserver: pods wired into br-int reach each other, the host
and pods on another node (Geneve); every CNI verb driven as kubelet drives it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cni.shim import post
from localcluster import netns as nets
from localcluster.kube import KubeControlPlane
from localcluster.ovn import OvnCentral, OvsNode
from localcluster.procs import run
from ovnkube.annotations import (
    L3_GATEWAY_CONFIG,
    NODE_CHASSIS_ID,
    NODE_MGMT_PORT_MAC,
    NODE_SUBNETS,
    L3GatewayConfig,
)
from tests.node_helpers import (
    Bed,
    Node,
    eventually,
    links,
    ovs_ports,
    ping,
    tcp_echo,
)

pytestmark = [pytest.mark.root, pytest.mark.kube]


@pytest.fixture
def bed(kube_api: KubeControlPlane, ovn_central: OvnCentral, netns_factory: nets.NetnsSet,
        ovs_node_factory: Callable[..., OvsNode], workdir: Path) -> Iterator[Bed]:
    b = Bed(kube_api, ovn_central, netns_factory, ovs_node_factory, workdir)
    try:
        yield b
    finally:
        b.stop()


def ext_ids(node: Node, port: str) -> dict[str, str]:
    out = node.ovs.vsctl("--format=json", "--data=json", "--columns=external_ids", "list",
                         "Interface", port)
    return dict(json.loads(out)["data"][0][0][1])


def test_two_pods_one_node_ping_tcp_and_host(bed: Bed) -> None:
    node = bed.add_node()
    # Registration: chassis in OVS and in the SB, node annotations, br-int.
    ids = node.ovs.vsctl("get", "Open_vSwitch", ".", "external_ids")
    for want in (f"system-id={node.name}", "ovn-encap-type=geneve",
                 f"ovn-encap-ip=\"{node.node_ip}\"", "ovn-bridge-datapath-type=netdev"):
        assert want in ids.replace('"', '"'), ids
    eventually(lambda: node.name in bed.central.sbctl("--bare", "--columns=name", "list",
                                                      "Chassis"), what="chassis in the SB")
    ann = bed.core.read_node(node.name).metadata.annotations
    assert ann[NODE_CHASSIS_ID] == node.name
    assert ann[NODE_MGMT_PORT_MAC] == "0a:58:0a:f4:01:02"
    # Conflist and shim installed.
    cl = json.loads(node.conflist.read_text())
    assert cl["cniVersion"] == "1.1.0" and cl["plugins"][0]["type"] == "ovn-k8s-cni-overlay"
    assert (node.cni_bin / "ovn-k8s-cni-overlay").stat().st_mode & 0o111
    assert oct(node.cni_socket.stat().st_mode & 0o777) == "0o600"
    # Management port: .2 on ovn-k8s-mp0, routes to cluster and service CIDRs.
    mp = run(["ip", "-br", "addr", "show", "ovn-k8s-mp0"], netns=node.netns)
    assert "10.244.1.2/24" in mp
    routes = run(["ip", "route"], netns=node.netns)
    assert "10.244.0.0/16 via 10.244.1.1 dev ovn-k8s-mp0" in routes
    assert "10.96.0.0/16 via 10.244.1.1 dev ovn-k8s-mp0" in routes
    assert bed.shim(node, "STATUS").code == 0

    a, b = bed.new_pod(node, 5), bed.new_pod(node, 6)
    res = bed.add(a)
    bed.add(b)
    assert res["cniVersion"] == "1.1.0"
    assert res["ips"] == [{"address": "10.244.1.5/24", "gateway": "10.244.1.1",
                           "interface": 1}]
    assert res["interfaces"][1] == {"name": "eth0", "mac": "0a:58:0a:f4:01:05",
                                    "sandbox": f"/run/netns/{a.netns}"}
    assert {"dst": "0.0.0.0/0", "gw": "10.244.1.1"} in res["routes"]
    # The OVS port carries what ovn-kubernetes writes, and ovn-controller installed it.
    e = ext_ids(node, a.host_ifname)
    assert e["iface-id"] == a.iface_id and e["iface-id-ver"] == a.uid
    assert e["attached_mac"] == a.mac and e["sandbox"] == a.container_id
    assert e["ovn-installed"] == "true"
    # The pod side: MAC, MTU, TX checksum offload off (netdev datapath).
    eth0 = run(["ip", "-o", "link", "show", "eth0"], netns=a.netns)
    assert "mtu 1400" in eth0 and "0a:58:0a:f4:01:05" in eth0
    assert "tx-checksumming: off" in run(["ethtool", "-k", "eth0"], netns=a.netns)

    assert ping(a.netns, b.ip)
    assert tcp_echo(a.netns, b.netns, b.ip)
    # Host (the node's namespace) to pod through the management port.
    assert ping(node.netns, a.ip)
    assert tcp_echo(node.netns, a.netns, a.ip, port=7778)
    # Pod to the gateway router port and back.
    assert ping(a.netns, "10.244.1.1")

    # CHECK against the ADD result; DEL twice; CHECK after DEL fails.
    assert bed.shim(node, "CHECK", a, conf=bed.plugin_conf(node, prevResult=res)).code == 0
    for _ in range(2):
        r = bed.shim(node, "DEL", a)
        assert r.code == 0 and r.out is None, r
    assert a.host_ifname not in ovs_ports(node)
    assert a.host_ifname not in links(node.netns)
    assert "eth0" not in links(a.netns)
    r = bed.shim(node, "CHECK", a, conf=bed.plugin_conf(node, prevResult=res))
    assert r.code != 0 and r.error_code == 103, r
    assert ping(b.netns, "10.244.1.2")


def test_two_nodes_geneve_and_gateway(bed: Bed) -> None:
    n1, n2 = bed.add_node(), bed.add_node()
    # Shared gateway: br-ex carries the uplink and the node IP; annotation for GR_<node>.
    assert "172.30.0.11/24" in run(["ip", "-br", "addr", "show", "br-ex"], netns=n1.netns)
    assert "172.30.0.11" not in run(["ip", "-br", "addr", "show", "up0"], netns=n1.netns)
    assert "up0" in n1.ovs.vsctl("list-ports", "br-ex").split()
    gw = L3GatewayConfig.parse(
        bed.core.read_node(n1.name).metadata.annotations[L3_GATEWAY_CONFIG])
    assert gw.mode == "shared" and gw.interface_id == f"br-ex_{n1.name}"
    assert [str(i) for i in gw.ip_addresses] == ["172.30.0.11/24"]
    assert [str(h) for h in gw.next_hops] == ["172.30.0.1"]
    # br-ex took the uplink's MAC (the node's, which GR_<node> shares); the
    # uplink got one of its own and no ARP, so the kernel stays out of it.
    brex_mac = run(["cat", "/sys/class/net/br-ex/address"], netns=n1.netns).strip()
    up0_mac = run(["cat", "/sys/class/net/up0/address"], netns=n1.netns).strip()
    assert gw.mac_address == brex_mac != up0_mac
    assert "NOARP" in run(["ip", "link", "show", "up0"], netns=n1.netns)
    assert "physnet:br-ex" in n1.ovs.vsctl("get", "Open_vSwitch", ".",
                                           "external_ids:ovn-bridge-mappings")
    # The nodes reach each other over the underlay through br-ex (the first
    # ARP round can take a while on a loaded machine: wait, then assert).
    eventually(lambda: ping(n1.netns, n2.node_ip), 30, "node 1 pings node 2's IP")

    a, b = bed.new_pod(n1, 5), bed.new_pod(n2, 5)
    bed.add(a)
    bed.add(b)
    assert ping(a.netns, b.ip)
    assert tcp_echo(a.netns, b.netns, b.ip)
    # Host of node 1 to the pod on node 2: management port, router, Geneve.
    assert ping(n1.netns, b.ip)
    flows = n1.ovs.appctl("dpctl/dump-flows")
    assert "tnl_push" in flows or "tnl_pop" in flows


def test_annotation_never_comes_leaves_nothing(bed: Bed) -> None:
    node = bed.add_node()
    pod = bed.new_pod(node, 7, annotate=False)
    before_ports, before_links = ovs_ports(node), links(node.netns)
    r = bed.shim(node, "ADD", pod)
    assert r.code == 1 and r.error_code == 11, r
    msg = r.out["msg"] if r.out else ""
    assert "timed out after 8s waiting for annotation k8s.ovn.org/pod-networks" in msg
    assert f"{pod.namespace}/{pod.name}" in msg
    assert ovs_ports(node) == before_ports
    assert links(node.netns) == before_links
    assert links(pod.netns) == ["lo"]
    # kubectl describe pod says why.
    events = bed.core.list_namespaced_event(
        pod.namespace, field_selector=f"involvedObject.name={pod.name}").items
    assert any(e.reason == "ErrorAddingPod" and "timed out" in e.message for e in events)
    # The shim logged the failure to its log file too.
    assert "code 11" in node.cni_log.read_text()


def test_annotation_late_malformed_and_pod_replaced(bed: Bed) -> None:
    node = bed.add_node()
    # The annotation arrives while ADD waits.
    late = bed.new_pod(node, 8, annotate=False)
    with ThreadPoolExecutor(1) as ex:
        fut = ex.submit(bed.shim, node, "ADD", late)
        eventually(lambda: late.container_id in (node.dir / "ovnkube-node.log").read_text()
                   or True, timeout=1)
        bed.annotate(late)
        r = fut.result(60)
    assert r.code == 0, r
    assert ping(late.netns, "10.244.1.1")
    # A malformed annotation: clear error naming the value, nothing half-done.
    bad = bed.new_pod(node, 9, annotate=False)
    bed.annotate(bad, '{"default": {"ip_addresses": ["10.244.1.999/24"], "mac_address": "x"}}')
    before_ports, before_links = ovs_ports(node), links(node.netns)
    r = bed.shim(node, "ADD", bad)
    assert r.error_code == 101, r
    assert r.out and "10.244.1.999" in r.out["msg"] and "k8s.ovn.org/pod-networks" in r.out["msg"]
    assert ovs_ports(node) == before_ports and links(node.netns) == before_links
    assert links(bad.netns) == ["lo"]
    # The pod was deleted and recreated (new UID) while kubelet still adds the old one.
    old = bed.new_pod(node, 10, annotate=False)
    bed.core.delete_namespaced_pod(old.name, old.namespace, grace_period_seconds=0)
    eventually(lambda: not [p for p in bed.core.list_namespaced_pod(old.namespace).items
                            if p.metadata.name == old.name], what="pod deleted")
    bed.new_pod(node, 11, name=old.name, annotate=False, lsp=False)
    r = bed.shim(node, "ADD", old)
    assert r.error_code == 3, r
    assert r.out and "UID" in r.out["msg"]
    assert links(old.netns) == ["lo"]


def test_thirty_parallel_adds_then_gc(bed: Bed) -> None:
    node = bed.add_node()
    pods = [bed.new_pod(node, 20 + i) for i in range(30)]
    with ThreadPoolExecutor(30) as ex:
        results = list(ex.map(lambda p: bed.shim(node, "ADD", p), pods))
    failed = [(p.name, r.out) for p, r in zip(pods, results, strict=True) if r.code != 0]
    assert not failed
    ports = ovs_ports(node)
    assert all(p.host_ifname in ports for p in pods)
    assert ping(pods[0].netns, pods[-1].ip)
    # GC: kubelet lists the attachments it still knows; the rest are leaks.
    keep = pods[:28]
    valid = [{"containerID": p.container_id, "ifname": "eth0"} for p in keep]
    r = bed.shim(node, "GC", conf=bed.plugin_conf(node, **{"cni.dev/valid-attachments": valid}))
    assert r.code == 0, r
    ports = ovs_ports(node)
    assert all(p.host_ifname in ports for p in keep)
    for leaked in pods[28:]:
        assert leaked.host_ifname not in ports
        assert leaked.host_ifname not in links(node.netns)
        assert links(leaked.netns) == ["lo"]
    assert "ovn-k8s-mp0" in ports
    assert ping(keep[0].netns, keep[-1].ip)


def test_agent_restart_keeps_pods_connected(bed: Bed) -> None:
    node = bed.add_node()
    a, b = bed.new_pod(node, 5), bed.new_pod(node, 6)
    bed.add(a)
    bed.add(b)
    bed.stop_agent(node)
    # kubelet meanwhile: the server is down -> try again later.
    r = bed.shim(node, "ADD", bed.new_pod(node, 7))
    assert r.error_code == 11 and "not running" in (r.out or {}).get("msg", ""), r
    r = bed.shim(node, "STATUS")
    assert r.error_code == 50, r
    assert ping(a.netns, b.ip)
    bed.start_agent(node)
    assert ping(a.netns, b.ip)
    assert "172.30.0.11/24" in run(["ip", "-br", "addr", "show", "br-ex"], netns=node.netns)
    assert bed.shim(node, "CHECK", a, conf=bed.plugin_conf(node, prevResult=a.result)).code == 0
    assert bed.shim(node, "DEL", a).code == 0
    assert ping(b.netns, "10.244.1.2")


def test_status_not_ready_until_node_subnets(bed: Bed) -> None:
    node = bed.add_node(start_agent=False, master=False)
    bed.start_agent(node, wait=False)
    eventually(node.cni_socket.exists, what="CNI socket")
    # The agent serves but is not ready: no subnet from the master yet.
    node.conflist.parent.mkdir(parents=True, exist_ok=True)
    conf = {"cniVersion": "1.1.0", "name": "ovn-kubernetes", "type": "ovn-k8s-cni-overlay",
            "serverSocket": str(node.cni_socket)}
    shim = Path(__file__).resolve().parent.parent / "cni" / "shim.py"
    r = eventually(lambda: (lambda r: r if "node-subnets" in r[1].get("msg", "") else None)(
        run_shim(shim, {"CNI_COMMAND": "STATUS"}, json.dumps(conf))), what="STATUS waiting")
    assert r[0] == 1 and r[1]["code"] == 50, r
    assert not node.conflist.exists()
    bed.master_node(node)
    node.wait_ready()
    r = run_shim(shim, {"CNI_COMMAND": "STATUS"}, json.dumps(conf))
    assert r[0] == 0, r
    # Kubernetes' own view: the chassis annotation is there.
    node_obj = bed.core.read_node(node.name)
    assert node_obj.metadata.annotations[NODE_CHASSIS_ID] == node.name


def run_shim(shim: Path, env: dict[str, str], stdin: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    res = subprocess.run([sys.executable, "-IS", str(shim)], input=stdin, text=True,
                         capture_output=True, env=env, timeout=60)
    return res.returncode, json.loads(res.stdout) if res.stdout.strip() else {}




def test_hostile_requests_leave_nothing(bed: Bed, tmp_path: Path) -> None:
    """Bad netns paths, container ids that name the node's own interfaces,
    garbage straight to the server's socket, ADD racing DEL: CNI error codes,
    the node's interfaces untouched, no veth or OVS port half-made."""
    node = bed.add_node()
    pod = bed.new_pod(node, 5)

    def state() -> tuple[list[str], list[str], list[str]]:
        return ovs_ports(node), node.ovs.vsctl("list-ports", "br-ex").split(), links(node.netns)

    before = state()
    assert "up0" in before[1] and "ovn-k8s-mp0" in before[0]
    not_ns = tmp_path / "not-a-netns"
    not_ns.write_text("")
    own = f"/run/netns/{node.netns}"
    cases: list[tuple[str, dict[str, str], int, str]] = [
        ("ADD", {"CNI_NETNS": str(not_ns)}, 4, f"{str(not_ns)!r} is not a namespace"),
        ("ADD", {"CNI_NETNS": "/proc/self/ns/mnt"}, 4, "not a network namespace"),
        ("ADD", {"CNI_NETNS": own}, 4, "the node's own network namespace"),
        ("CHECK", {"CNI_NETNS": own}, 4, "the node's own network namespace"),
        # DEL would remove CNI_IFNAME in CNI_NETNS: here the node's uplink.
        ("DEL", {"CNI_NETNS": own, "CNI_IFNAME": "up0"}, 4, "the node's own network namespace"),
        # The host end of the veth is named from the container id: these name
        # the node's uplink (in br-ex), its management port and br-ex itself.
        ("ADD", {"CNI_CONTAINERID": "up0"}, 4, "OVS interface 'up0' is the node's"),
        ("ADD", {"CNI_CONTAINERID": "ovn-k8s-mp0"}, 4, "'ovn-k8s-mp0' is the node's"),
        ("ADD", {"CNI_CONTAINERID": "br-ex"}, 4, "'br-ex' is the node's"),
        ("ADD", {"CNI_CONTAINERID": "lo"}, 4, "host interface 'lo' is the node's"),
        ("ADD", {"CNI_IFNAME": "a-much-too-long-name"}, 4, "'a-much-too-long-name'"),
        ("ADD", {"CNI_CONTAINERID": "../../x"}, 4, "'../../x'"),
    ]
    for cmd, env, code, msg in cases:
        conf = bed.plugin_conf(node, prevResult={"interfaces": [
            {"name": "eth0", "sandbox": own}]}) if cmd == "CHECK" else None
        r = bed.shim(node, cmd, pod, env=env, conf=conf)
        assert r.code == 1 and r.error_code == code, (cmd, env, r)
        assert r.out and msg in r.out["msg"], (cmd, env, r.out)
        assert state() == before, (cmd, env)
    assert links(pod.netns) == ["lo"]
    # DEL is idempotent: for a container id naming a node interface it
    # succeeds, and deletes nothing of the node's.
    for cid in ("up0", "ovn-k8s-mp0", "br-ex", "br-int", "lo"):
        r = bed.shim(node, "DEL", pod, env={"CNI_CONTAINERID": cid})
        assert r.code == 0, (cid, r)
        assert state() == before, cid
    # Garbage straight to the server's socket (not through the shim).
    sock = str(node.cni_socket)
    good_env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "abc", "CNI_IFNAME": "eth0",
                "CNI_NETNS": own}
    conf_s = json.dumps(bed.plugin_conf(node))
    for data, code in [
            (b"x" * (10 << 20), 7), (b"{nope", 6), (b"[" * 100_000, 6),
            (json.dumps({"env": good_env, "config": 5}).encode(), 6),
            (json.dumps({"env": {**good_env, "CNI_IFNAME": 7}, "config": conf_s}).encode(), 4),
            (json.dumps({"env": good_env, "config": conf_s, "more": 1}).encode(), 2),
            (json.dumps({"env": good_env, "config": conf_s}).encode(), 4)]:  # own netns
        status, _, payload = post(sock, data, timeout=60)
        assert status == 400 and json.loads(payload)["code"] == code, (data[:40], payload)
    assert state() == before

    # ADD racing DEL of one container: serialised, so either the pod is fully
    # wired (ADD last) or nothing of it is left (DEL last); never half.
    eth0 = lambda: "eth0" in links(pod.netns)  # noqa: E731
    for _ in range(4):
        with ThreadPoolExecutor(2) as ex:
            add = ex.submit(bed.shim, node, "ADD", pod)
            dele = ex.submit(bed.shim, node, "DEL", pod)
            r_add, r_del = add.result(120), dele.result(120)
        assert r_del.code == 0, r_del
        assert r_add.code == 0 or r_add.error_code in (3, 11), r_add
        wired = (pod.host_ifname in ovs_ports(node), pod.host_ifname in links(node.netns),
                 eth0())
        assert wired in ((True, True, True), (False, False, False)), wired
        assert bed.shim(node, "DEL", pod).code == 0
        assert state() == before and not eth0()
    # The server kept serving: the pod comes up and talks.
    bed.add(pod)
    assert ping(pod.netns, "10.244.1.1")


def test_bad_node_subnets_annotation_waits_and_says_why(bed: Bed) -> None:
    """The agent reads node-subnets: a malformed value is an Event on the node
    and the not-ready reason, and the agent waits (no crash) until the master
    writes a valid one."""
    node = bed.add_node(start_agent=False, master=False)
    bad = '{"default": ["10.244.1.0/24", 42]}'
    bed.core.patch_node(node.name, {"metadata": {"annotations": {NODE_SUBNETS: bad}}})
    agent = bed.start_agent(node, wait=False)
    eventually(node.cni_socket.exists, what="CNI socket")

    def ready_reason() -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(node.cni_socket))
            s.sendall(b"GET /ready HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return str(json.loads(data.partition(b"\r\n\r\n")[2])["reason"])

    reason = eventually(lambda: (lambda r: r if "is not a string" in r else None)(ready_reason()),
                        what="not ready, naming the bad value")
    assert f"annotation {NODE_SUBNETS}=" in reason and "is not a string" in reason, reason
    events = eventually(lambda: [
        e for e in bed.core.list_namespaced_event(
            "default", field_selector=f"involvedObject.name={node.name}").items
        if e.reason == "ErrorParsingNodeAnnotation"], what="an Event on the node")
    assert bad in events[0].message or repr(bad) in events[0].message, events[0].message
    assert agent.alive()
    bed.master_node(node)
    node.wait_ready()
    assert bed.shim(node, "STATUS").code == 0
