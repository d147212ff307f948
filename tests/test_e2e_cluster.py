"""End to end on an `ovnkube-local` cluster: real control plane, OVN, OVS in
userspace, node agents, the CNI shim run by a kubelet, pods as processes."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

from localcluster import netns as nets
from localcluster.cluster import Cluster, cluster_dir, netns_prefix
from localcluster.sweep import our_pids
from tests.e2e_helpers import E2E, netexec_deployment, wait_for


def _by_node(pods: list[dict]) -> dict[str, list[dict]]:  # type: ignore[type-arg]
    out: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for p in pods:
        out.setdefault(p["spec"]["nodeName"], []).append(p)
    return out


def test_pod_connectivity(local_cluster: E2E) -> None:
    e = local_cluster
    n1, n2 = e.nodes
    e.apply(netexec_deployment("conn-a", 2, node=n1))
    e.apply(netexec_deployment("conn-b", 1, node=n2))
    a1, a2 = e.ready_pods("app=conn-a", 2)
    (b1,) = e.ready_pods("app=conn-b", 1)
    # Pod to pod on the same node, and across nodes (Geneve).
    for src, dst in ((a1, a2), (a1, b1), (b1, a2)):
        got = e.curl(lambda *c, s=src: e.pod_exec(s, *c),
                     f"http://{dst['status']['podIP']}:8080/hostname")
        assert got == dst["metadata"]["name"]
    # The pod sees the other pod's own address (no NAT inside the cluster).
    got = e.curl(lambda *c: e.pod_exec(b1, *c), f"http://{a1['status']['podIP']}:8080/clientip")
    assert got.split(":")[0] == b1["status"]["podIP"]
    # Node host to a pod (through the management port), local and remote.
    for pod in (a1, b1):
        got = e.curl(lambda *c: e.node_exec(n1, *c),
                     f"http://{pod['status']['podIP']}:8080/hostname")
        assert got == pod["metadata"]["name"]
    # Pod out through its node's gateway to an address on the underlay: the
    # control plane's apiserver sees the node's IP (SNAT at GR_<node>).
    assert e.curl(lambda *c: e.pod_exec(b1, *c), f"https://{e.cp_ip}:6443/healthz",
                  "-k") == "ok"
    assert " 0% packet loss" in e.pod_exec(a1, "ping", "-c", "2", "-W", "3", e.cp_ip)
    # Every pod has its port in the NB, named <ns>_<pod>.
    ports = e.c.nbctl("--bare", "--columns=name", "list", "Logical_Switch_Port").split()
    for pod in (a1, a2, b1):
        assert f"default_{pod['metadata']['name']}" in ports


def test_deployment_scale_keeps_connectivity(local_cluster: E2E) -> None:
    e = local_cluster
    e.apply(netexec_deployment("scale", 2))
    e.apply(netexec_deployment("scale-client", 1))
    (client,) = e.ready_pods("app=scale-client", 1)

    def all_answer(n: int) -> bool:
        pods = e.ready_pods("app=scale", n)
        for p in pods:
            got = e.curl(lambda *c: e.pod_exec(client, *c),
                         f"http://{p['status']['podIP']}:8080/hostname")
            assert got == p["metadata"]["name"]
        return True

    assert all_answer(2)
    e.kubectl("scale", "deployment/scale", "--replicas=5")
    assert wait_for(lambda: all_answer(5), 120, "5 replicas answering")
    assert len(_by_node(e.ready_pods("app=scale", 5))) == 2  # spread over both nodes
    e.kubectl("scale", "deployment/scale", "--replicas=1")
    assert wait_for(lambda: all_answer(1), 120, "1 replica answering")
    # Ports of the removed pods are gone from the NB.
    live = {f"default_{p['metadata']['name']}" for p in e.pods("app=scale")}
    wait_for(lambda: {n for n in e.c.nbctl("--bare", "--columns=name", "list",
                                           "Logical_Switch_Port").split()
                      if n.startswith("default_scale-") and "client" not in n} <= live,
             60, "ports of deleted pods removed")


def test_second_cluster_beside_and_down_leaves_nothing(local_cluster: E2E) -> None:
    c = Cluster.create("gone" + secrets.token_hex(2), 1)
    name, d = c.s.name, c.s.dir
    assert nets.list_netns(netns_prefix(name))
    # Side by side with the session's cluster: its own subnet, names and dir.
    assert c.s.underlay != local_cluster.c.s.underlay
    assert c.s.api_port != local_cluster.c.s.api_port
    assert c.kubectl("get", "nodes", "-o", "name").split() == [
        f"node/{name}-control-plane", f"node/{name}-worker"]
    c.down()
    assert nets.list_netns(netns_prefix(name)) == []
    assert our_pids(marker=d) == []
    assert not cluster_dir(name).exists()
    leftover = subprocess.run(["pgrep", "-f", d], capture_output=True, text=True).stdout
    assert leftover == ""
    # `down && up` with the same name just works: nothing of the old one is in the way.
    again = Cluster.create(name, 1)
    try:
        assert f"node/{name}-worker" in again.kubectl("get", "nodes", "-o", "name").split()
    finally:
        again.down()
    assert nets.list_netns(netns_prefix(name)) == [] and our_pids(marker=d) == []


def test_command_line(local_cluster: E2E) -> None:
    """`ovnkube-local` subcommands, as scripts and people use them."""
    e = local_cluster
    name = e.c.s.name
    cli = [sys.executable, "-m", "localcluster.cli"]

    def run(*args: str) -> str:
        res = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=60,
                             cwd=str(Path(__file__).resolve().parent.parent))
        assert res.returncode == 0, (args, res.stdout, res.stderr)
        return res.stdout

    status = run("status", "--name", name)
    network = (("ovnnb_db", "ovnkube-master", "ovn-controller") if e.c.s.cni == "ovn"
               else ("ovnkube-db", "ovnkube-master", "ovnkube-node", "ovs-node"))  # pods
    for part in ("kube-apiserver", "kubelet", *network):
        assert part in status
    assert "DEAD" not in status
    kubeconfig = run("kubeconfig", "--name", name).strip()
    assert kubeconfig == str(e.c.s.kubeconfig)
    nodes = run("kubectl", "--name", name, "--", "get", "nodes", "-o", "name").split()
    assert nodes == [f"node/{n}" for n in sorted(e.c.s.all_nodes)]
    n1 = e.nodes[0]
    assert "br-ex" in run("node-exec", "--name", name, n1, "--", "ip", "-br", "addr")
    assert f"({n1})" in run("nbctl", "--name", name, "--", "show")
    # Options of the other program pass as given, with or without `--`.
    assert n1 in run("nbctl", "--name", name, "--bare", "--columns=name", "list",
                     "Logical_Switch").split()
    assert run("kubectl", "--name", name, "get", "nodes", "-o", "name").split() == nodes
    assert f"Chassis {n1}" in run("sbctl", "--name", name, "--", "show")
    assert set(run("vsctl", "--name", name, "--node", n1, "--", "list-br").split()) == {
        "br-int", "br-ex"}
    e.apply(netexec_deployment("cli", 1, node=n1))
    (pod,) = e.ready_pods("app=cli", 1)
    addrs = run("exec", "--name", name, f"default/{pod['metadata']['name']}", "--",
                "ip", "-br", "addr", "show", "eth0")
    assert pod["status"]["podIP"] in addrs
    # Errors name what is wrong.
    res = subprocess.run([*cli, "status", "--name", "nosuch"], capture_output=True, text=True,
                         timeout=30, cwd=str(Path(__file__).resolve().parent.parent))
    assert res.returncode == 1 and "no cluster named 'nosuch'" in res.stderr


def test_kubectl_run_busybox_and_unknown_image(local_cluster: E2E) -> None:
    """`kubectl run --image=busybox -- sleep 3600` runs (args after the image's
    empty entrypoint); an image the map does not know waits in ErrImagePull,
    its message naming the image and the map."""
    e = local_cluster
    e.kubectl("run", "bb", "--image=busybox", "--restart=Never", "--", "sleep", "3600")
    e.kubectl("run", "ng", "--image=nginx:1.27", "--restart=Never")
    try:
        wait_for(lambda: e.get("pod", "bb")["status"].get("phase") == "Running", 60,
                 "busybox pod running")

        def pull_error() -> str | None:
            st = e.get("pod", "ng")["status"].get("containerStatuses") or []
            w = (st[0].get("state") or {}).get("waiting") or {} if st else {}
            return w.get("message") if w.get("reason") in ("ErrImagePull", "ImagePullBackOff") \
                else None
        msg = wait_for(pull_error, 60, "ErrImagePull for nginx")
        assert '"nginx:1.27"' in msg and "images.json" in msg, msg
    finally:
        e.kubectl("delete", "pod", "bb", "ng", "--wait=false")


def test_control_plane_node_like_kinds(local_cluster: E2E) -> None:
    """The control plane is a node, as in kind: tainted NoSchedule, labelled
    with its role, in the pod network. Pods that tolerate the taint (system
    pods, Helm's host-network OVN central) run there and reach the apiserver
    on the node's own address through the kubernetes Service."""
    e = local_cluster
    cp = e.c.s.control_plane
    node = json.loads(e.kubectl("get", "node", cp, "-o", "json"))
    assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"} in \
        node["spec"]["taints"]
    assert "node-role.kubernetes.io/control-plane" in node["metadata"]["labels"]
    addrs = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addrs["InternalIP"] == e.cp_ip
    # What does not tolerate the taint goes to the workers only.
    e.apply(netexec_deployment("spread", 4))
    pods = e.ready_pods("app=spread", 4)
    assert {p["spec"]["nodeName"] for p in pods} <= set(e.nodes)
    # A pod and a host-network pod on the control-plane node.
    tolerate = ("      tolerations: [{key: node-role.kubernetes.io/control-plane, "
                "effect: NoSchedule}]\n")
    e.apply(netexec_deployment("on-cp", 1, node=cp).replace("      containers:",
                                                          tolerate + "      containers:"))
    e.apply(netexec_deployment("on-cp-host", 1, node=cp).replace(
        "      containers:", tolerate + "      hostNetwork: true\n      containers:"))
    try:
        (pod,) = e.ready_pods("app=on-cp", 1)
        (host,) = e.ready_pods("app=on-cp-host", 1)
        assert host["status"]["podIP"] == e.cp_ip
        assert e.kubectl("exec", host["metadata"]["name"], "--", "hostname").strip() == cp
        # The kubernetes Service's backend is this node's own address.
        assert e.curl(lambda *c: e.pod_exec(pod, *c), "https://10.96.0.1/healthz", "-k") == "ok"
        # Pods on the workers and the control-plane node reach each other,
        # and the control plane's host reaches pods through its own node.
        for src, dst in ((pod, pods[0]), (pods[0], pod)):
            got = e.curl(lambda *c, s=src: e.pod_exec(s, *c),
                         f"http://{dst['status']['podIP']}:8080/hostname")
            assert got == dst["metadata"]["name"]
        got = e.curl(lambda *c: e.node_exec(cp, *c),
                     f"http://{pods[0]['status']['podIP']}:8080/hostname")
        assert got == pods[0]["metadata"]["name"]
    finally:
        e.kubectl("delete", "deployment", "spread", "on-cp", "on-cp-host", "--wait=false")
