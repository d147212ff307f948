"""The netns-kubelet against a real apiserver (+ kube-controller-manager), with a
real test CNI plugin executed like kubelet does, pods as processes in their own
network namespaces behind a bridge in a test-owned node namespace."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.kube import KubeControlPlane
from localcluster.kubelet import find_pod_netns, pod_netns_name
from localcluster.procs import Daemon
from tests.kubelet_helpers import (
    AGNHOST,
    Kube,
    KubeletNode,
    condition,
    container_status,
    curl,
    eventually,
    kubelet_node,
    netexec,
    netns_run,
    pod_manifest,
    process_tree,
    running_ready,
    still_running,
)

pytestmark = [pytest.mark.root, pytest.mark.kube]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def node(kube_cluster: KubeControlPlane, run_prefix: str) -> Iterator[KubeletNode]:
    with kubelet_node(kube_cluster, f"{run_prefix}{secrets.token_hex(1)}k", index=1) as n:
        yield n


@pytest.fixture(scope="module")
def kube(kube_cluster: KubeControlPlane) -> Iterator[Kube]:
    k = Kube(kube_cluster)
    yield k
    k.close()


@pytest.fixture
def ns(kube: Kube) -> Iterator[str]:
    name = kube.create_namespace()
    yield name
    kube.delete_namespace(name)


def _wait_gone(kube: Kube, ns: str, name: str, timeout: float = 60) -> None:
    eventually(lambda: kube.pod_gone(ns, name), timeout, f"pod {ns}/{name} deleted")


# --- the node -------------------------------------------------------------------

def test_node_registers_ready_and_keeps_its_lease(node: KubeletNode, kube: Kube) -> None:
    n = eventually(lambda: (lambda o: o if condition(o, "Ready") == "True" else None)(
        kube.get(f"/api/v1/nodes/{node.name}")), 30, "node Ready")
    st = n["status"]
    assert {"type": "InternalIP", "address": node.gateway} in st["addresses"]
    assert {"type": "Hostname", "address": node.name} in st["addresses"]
    assert st["capacity"]["pods"] == "110" and st["allocatable"]["pods"] == "110"
    assert int(st["capacity"]["cpu"]) >= 1 and st["capacity"]["memory"].endswith("Ki")
    assert st["nodeInfo"]["kubeletVersion"].startswith("v1.")
    assert n["metadata"]["labels"]["kubernetes.io/hostname"] == node.name

    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node.name}"
    lease = kube.get(lease_path)
    assert lease["spec"]["holderIdentity"] == node.name
    assert lease["metadata"]["ownerReferences"][0]["uid"] == n["metadata"]["uid"]
    # Renewed (every second in this test bed) and the heartbeat moves on too.
    seen = {lease["spec"]["renewTime"]}

    def renewed() -> bool:
        seen.add(kube.get(lease_path)["spec"]["renewTime"])
        return len(seen) >= 3
    eventually(renewed, 30, "three distinct lease renewTimes")

    def heartbeat() -> str:
        conds = kube.get(f"/api/v1/nodes/{node.name}")["status"]["conditions"]
        cond = next(c for c in conds if c["type"] == "Ready")
        assert cond["status"] == "True"
        return str(cond["lastHeartbeatTime"])
    first = heartbeat()
    eventually(lambda: heartbeat() != first, 30, "a newer Ready heartbeat")


# --- pods -----------------------------------------------------------------------

def test_agnhost_pod_runs_with_ip_and_answers(node: KubeletNode, kube: Kube, ns: str) -> None:
    probe = {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}
    live = {"tcpSocket": {"port": "http"}, "periodSeconds": 1}
    server = netexec(readinessProbe=probe, livenessProbe=live,
                     ports=[{"name": "http", "containerPort": 8080}])
    kube.create_pod(ns, pod_manifest("server", node.name, [server]))
    kube.create_pod(ns, pod_manifest("client", node.name, [netexec()]))
    p = kube.wait_pod(ns, "server", running_ready, "Running and Ready")
    st = p["status"]
    ip = st["podIP"]
    assert ip.startswith("10.88.1.") and st["podIPs"] == [{"ip": ip}]
    assert st["hostIP"] == node.gateway and st["startTime"]
    assert {c["type"]: c["status"] for c in st["conditions"]}.items() >= {
        "PodScheduled": "True", "Initialized": "True", "ContainersReady": "True",
        "Ready": "True"}.items()
    cs = container_status(p, "app")
    assert cs["ready"] and cs["started"] and cs["restartCount"] == 0
    assert "running" in cs["state"] and cs["containerID"].startswith("netns://")
    assert cs["image"] == AGNHOST and cs["imageID"]

    # From the node's namespace over the bridge: the pod's hostname and our address.
    assert curl(node.netns, f"http://{ip}:8080/hostname") == "server"
    assert curl(node.netns, f"http://{ip}:8080/clientip").startswith(f"{node.gateway}:")
    # From inside the pod's own namespace.
    pod_ns = pod_netns_name(node.config().state_dir, p["metadata"]["uid"])
    assert pod_ns.startswith(node.pod_prefix)
    assert find_pod_netns(node.config().state_dir, ns, "server") == pod_ns
    assert curl(pod_ns, "http://127.0.0.1:8080/echo?msg=hi") == "hi"
    # Pod to pod, HTTP and UDP, through agnhost's /dial on the client.
    c = kube.wait_pod(ns, "client", running_ready, "Running and Ready")
    cip = c["status"]["podIP"]
    assert cip != ip
    for proto, port in (("http", 8080), ("udp", 8081)):
        out = json.loads(curl(node.netns, f"http://{cip}:8080/dial?request=hostname&"
                                          f"protocol={proto}&host={ip}&port={port}&tries=2"))
        assert out == {"responses": ["server", "server"]}, out

    # CNI was run as kubelet runs it: the list's name and version, CNI_* env,
    # the chained plugin given the first one's result.
    adds = node.cni_calls("ADD", pod="server")
    assert [a["plugin"] for a in adds] == ["test-veth", "test-chain"]
    env = adds[0]["env"]
    sandbox = env["CNI_CONTAINERID"]
    assert env["CNI_NETNS"] == f"/run/netns/{pod_ns}" and env["CNI_IFNAME"] == "eth0"
    assert env["CNI_ARGS"] == (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME=server;"
                               f"K8S_POD_INFRA_CONTAINER_ID={sandbox};"
                               f"K8S_POD_UID={p['metadata']['uid']}")
    assert env["CNI_PATH"] == str(node.dir / "bin")
    assert all(a["conf"]["name"] == "testnet" and a["conf"]["cniVersion"] == "1.1.0"
               for a in adds)
    assert "prevResult" not in adds[0]["conf"]
    assert adds[1]["conf"]["prevResult"]["ips"][0]["address"] == f"{ip}/24"
    # Container logs are files in the state dir.
    logs = list((node.config().state_dir / "pods").glob(f"{ns}_server_*/app/*.log"))
    assert logs and "Started HTTP server" in logs[0].read_text()


def test_readiness_probe_gates_ready(node: KubeletNode, kube: Kube, ns: str) -> None:
    flag = node.dir / f"ready-{secrets.token_hex(3)}"
    probe = {"exec": {"command": ["test", "-e", str(flag)]}, "periodSeconds": 1,
             "failureThreshold": 1}
    kube.create_pod(ns, pod_manifest("gated", node.name, [netexec(readinessProbe=probe)]))
    p = kube.wait_pod(ns, "gated", lambda p: p["status"].get("phase") == "Running"
                      and container_status(p)["started"], "Running")
    time.sleep(3)  # several probe periods: it must stay unready
    p = kube.pod(ns, "gated")
    assert condition(p, "Ready") == "False" and condition(p, "ContainersReady") == "False"
    assert not container_status(p)["ready"]
    flag.touch()
    kube.wait_pod(ns, "gated", running_ready, "Ready once the probe passes")
    flag.unlink()
    kube.wait_pod(ns, "gated", lambda p: condition(p, "Ready") == "False",
                  "unready again when the probe fails")
    assert any(e["reason"] == "Unhealthy" for e in kube.events(ns, "gated"))


def test_http_readiness_probe_on_closed_port_stays_unready(node: KubeletNode, kube: Kube,
                                                           ns: str) -> None:
    probe = {"httpGet": {"path": "/healthz", "port": 9999}, "periodSeconds": 1}
    kube.create_pod(ns, pod_manifest("closed", node.name, [netexec(readinessProbe=probe)]))
    kube.wait_pod(ns, "closed", lambda p: p["status"].get("phase") == "Running", "Running")
    time.sleep(3)
    assert condition(kube.pod(ns, "closed"), "Ready") == "False"


def test_restart_policies(node: KubeletNode, kube: Kube, ns: str) -> None:
    def sh(name: str, script: str) -> dict[str, Any]:
        return {"name": name, "image": "busybox", "command": ["sh", "-c", script]}
    kube.create_pod(ns, pod_manifest("always", node.name, [sh("c", "exit 3")]))
    kube.create_pod(ns, pod_manifest("never", node.name, [sh("c", "exit 1")],
                                     restartPolicy="Never"))
    kube.create_pod(ns, pod_manifest("onfailure", node.name,
                                     [sh("c", "echo done; exit 0")], restartPolicy="OnFailure"))
    p = kube.wait_pod(ns, "always", lambda p: container_status(p)["restartCount"] >= 2,
                      "restarted twice")
    cs = container_status(p)
    assert cs["lastState"]["terminated"]["exitCode"] == 3
    assert cs["lastState"]["terminated"]["reason"] == "Error"
    assert p["status"]["phase"] == "Running"
    p = kube.wait_pod(ns, "never", lambda p: p["status"].get("phase") == "Failed", "Failed")
    cs = container_status(p)
    assert cs["state"]["terminated"]["exitCode"] == 1 and cs["restartCount"] == 0
    p = kube.wait_pod(ns, "onfailure", lambda p: p["status"].get("phase") == "Succeeded",
                      "Succeeded")
    assert container_status(p)["state"]["terminated"]["reason"] == "Completed"
    assert condition(p, "Ready") == "False"
    # A finished pod's sandbox is torn down: CNI DEL ran and its namespace is gone.
    uid = p["metadata"]["uid"]
    eventually(lambda: node.cni_calls("DEL", pod="onfailure"), 30, "CNI DEL")
    assert not [n for n in node.pod_namespaces() if n.endswith(uid.replace("-", "")[:8])]
    assert p["status"]["podIP"]


def test_liveness_failure_restarts_container(node: KubeletNode, kube: Kube, ns: str) -> None:
    live = {"httpGet": {"path": "/healthz", "port": 9999}, "periodSeconds": 1,
            "failureThreshold": 2}
    kube.create_pod(ns, pod_manifest("unlive", node.name, [netexec(livenessProbe=live)]))
    p = kube.wait_pod(ns, "unlive", lambda p: container_status(p)["restartCount"] >= 1,
                      "restarted after failing liveness")
    reasons = {e["reason"] for e in kube.events(ns, "unlive")}
    assert {"Unhealthy", "Killing"} <= reasons
    # agnhost netexec exits 0 on SIGTERM
    assert container_status(p)["lastState"]["terminated"]["exitCode"] == 0


def test_cni_error_becomes_event_and_is_retried(node: KubeletNode, kube: Kube,
                                                ns: str) -> None:
    kube.create_pod(ns, pod_manifest("bad-pod", node.name, [netexec()]))

    def failed_events() -> list[dict[str, Any]]:
        return [e for e in kube.events(ns, "bad-pod")
                if e["reason"] == "FailedCreatePodSandBox"]
    ev = eventually(failed_events, 60, "a FailedCreatePodSandBox event")[0]
    assert ev["type"] == "Warning"
    assert "test plugin says no (pod bad-pod)" in ev["message"]
    assert 'plugin type="test-veth" name="testnet" failed (add)' in ev["message"]
    assert ev["source"]["host"] == node.name
    # Retried with back-off; each failure cleaned up (DEL, namespace removed).
    eventually(lambda: len(node.cni_calls("ADD", "test-veth", "bad-pod")) >= 2, 30,
               "ADD retried")
    assert node.cni_calls("DEL", pod="bad-pod")
    p = kube.pod(ns, "bad-pod")
    assert p["status"]["phase"] == "Pending" and not p["status"].get("podIP")
    uid8 = p["metadata"]["uid"].replace("-", "")[:8]
    time.sleep(0.5)
    # Between attempts no namespace is left (allow one attempt in flight).
    eventually(lambda: not [n for n in node.pod_namespaces() if n.endswith(uid8)], 10,
               "no namespace between attempts")
    kube.delete_pod(ns, "bad-pod")
    _wait_gone(kube, ns, "bad-pod")


def test_unknown_image_waits_honestly(node: KubeletNode, kube: Kube, ns: str) -> None:
    kube.create_pod(ns, pod_manifest("nginx", node.name, [{"name": "web", "image": "nginx"}]))
    p = kube.wait_pod(ns, "nginx", lambda p: (container_status(p)["state"].get("waiting")
                                               or {}).get("reason") == "ErrImagePull",
                      "waiting with ErrImagePull")
    w = container_status(p)["state"]["waiting"]
    assert '"nginx" is not in the image map' in w["message"] and "images.json" in w["message"]
    assert p["status"]["phase"] == "Pending"


def test_pause_image_and_env(node: KubeletNode, kube: Kube, ns: str) -> None:
    out = node.dir / f"env-{secrets.token_hex(3)}"
    script = f'echo "$GREETING $MY_POD $HOSTNAME $(pwd)" > {out}; exec sleep 300'
    kube.create_pod(ns, pod_manifest("envpod", node.name, [
        {"name": "pause", "image": "registry.k8s.io/pause:3.10"},
        {"name": "sh", "image": "busybox", "command": ["sh", "-c", script],
         "workingDir": "/tmp",
         "env": [{"name": "GREETING", "value": "hello"},
                 {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
    ]))
    kube.wait_pod(ns, "envpod", running_ready, "Running and Ready")
    assert eventually(lambda: out.exists() and out.read_text()).strip() == \
        "hello envpod envpod /tmp"


def test_delete_pod_runs_del_and_cleans_up(node: KubeletNode, kube: Kube, ns: str) -> None:
    kube.create_pod(ns, pod_manifest("doomed", node.name, [netexec()]))
    p = kube.wait_pod(ns, "doomed", running_ready, "Running and Ready")
    uid = p["metadata"]["uid"]
    pod_ns = pod_netns_name(node.config().state_dir, uid)
    add = node.cni_calls("ADD", "test-veth", "doomed")[-1]
    host_veth = "tv" + add["env"]["CNI_CONTAINERID"][:12]
    assert host_veth in netns_run(node.netns, "ip", "-br", "link")
    procs_before = process_tree(uid)  # the shim (its exit file is in the pod's dir) + agnhost
    assert any("localcluster.agnhost netexec" in v for v in procs_before.values()), \
        node.our_processes()

    kube.delete_pod(ns, "doomed")  # graceful: the kubelet finishes the deletion
    _wait_gone(kube, ns, "doomed")
    dels = node.cni_calls("DEL", pod="doomed")
    assert [d["plugin"] for d in dels][-2:] == ["test-chain", "test-veth"]  # reverse order
    assert dels[-1]["conf"]["prevResult"]["ips"][0]["address"] == f"{p['status']['podIP']}/24"
    assert dels[-1]["env"]["CNI_CONTAINERID"] == add["env"]["CNI_CONTAINERID"]
    assert host_veth not in netns_run(node.netns, "ip", "-br", "link")
    assert pod_ns not in node.pod_namespaces()
    assert still_running(procs_before) == {}
    assert not list((node.config().state_dir / "pods").glob(f"*_{uid}"))


def test_force_deleted_pod_is_cleaned_up(node: KubeletNode, kube: Kube, ns: str) -> None:
    kube.create_pod(ns, pod_manifest("forced", node.name, [netexec()]))
    p = kube.wait_pod(ns, "forced", running_ready, "Running and Ready")
    uid = p["metadata"]["uid"]
    pod_ns = pod_netns_name(node.config().state_dir, uid)
    procs = process_tree(uid)
    assert procs
    kube.delete_pod(ns, "forced", grace=0)  # gone from the API at once
    eventually(lambda: pod_ns not in node.pod_namespaces(), 30, "namespace removed")
    eventually(lambda: still_running(procs) == {}, 30, "processes stopped")
    assert [d["plugin"] for d in node.cni_calls("DEL", pod="forced")] == \
        ["test-chain", "test-veth"]


def test_init_containers_run_first(node: KubeletNode, kube: Kube, ns: str) -> None:
    mark = node.dir / f"init-{secrets.token_hex(3)}"
    kube.create_pod(ns, pod_manifest(
        "inits", node.name,
        [{"name": "main", "image": "busybox",
          "command": ["sh", "-c", f"test -e {mark} && exec sleep 300"]}],
        initContainers=[
            {"name": "one", "image": "busybox", "command": ["sh", "-c", f"echo 1 > {mark}"]},
            {"name": "two", "image": "busybox", "command": ["test", "-e", str(mark)]}]))
    p = kube.wait_pod(ns, "inits", running_ready, "Running and Ready")
    inits = p["status"]["initContainerStatuses"]
    assert [(c["name"], c["state"]["terminated"]["reason"]) for c in inits] == \
        [("one", "Completed"), ("two", "Completed")]
    assert condition(p, "Initialized") == "True"
    assert container_status(p, "main")["restartCount"] == 0


def test_host_network_pod(node: KubeletNode, kube: Kube, ns: str) -> None:
    kube.create_pod(ns, pod_manifest("hostnet", node.name, [
        netexec(http_port=18080, udp_port=18081,
                readinessProbe={"tcpSocket": {"port": 18080}, "periodSeconds": 1})],
        hostNetwork=True))
    p = kube.wait_pod(ns, "hostnet", running_ready, "Running and Ready")
    assert p["status"]["podIP"] == node.gateway
    # It listens in the node's namespace (no CNI for it).
    assert curl(node.netns, f"http://{node.gateway}:18080/hostname") == "hostnet"
    assert not node.cni_calls("ADD", pod="hostnet")


def test_deployment_gets_two_running_pods(node: KubeletNode, kube: Kube, ns: str) -> None:
    # No scheduler in this test bed: the template binds the pods to our node.
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"nodeName": node.name,
                                          "terminationGracePeriodSeconds": 1,
                                          "containers": [netexec(readinessProbe={
                                              "httpGet": {"path": "/healthz", "port": 8080},
                                              "periodSeconds": 1})]}}}}
    from ovnkube.kubeclient import request
    request(kube.api, "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", dep)

    def ready_pods() -> list[dict[str, Any]]:
        pods = kube.get(f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3Dweb")["items"]
        ready = [p for p in pods if running_ready(p) and p["spec"]["nodeName"] == node.name]
        return ready if len(ready) == 2 else []
    pods = eventually(ready_pods, 120, "2 Ready replicas")
    ips = {p["status"]["podIP"] for p in pods}
    assert len(ips) == 2
    for p in pods:
        assert curl(node.netns, f"http://{p['status']['podIP']}:8080/hostname") == \
            p["metadata"]["name"]
    eventually(lambda: kube.get(f"/apis/apps/v1/namespaces/{ns}/deployments/web")["status"]
               .get("readyReplicas") == 2, 60, "deployment readyReplicas 2")
    # Scale to zero: the pods go and so do their namespaces.
    request(kube.api, "PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/web",
            {"spec": {"replicas": 0}}, content_type="application/merge-patch+json")
    eventually(lambda: not kube.get(
        f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3Dweb")["items"], 60, "pods gone")
    uids8 = {p["metadata"]["uid"].replace("-", "")[:8] for p in pods}
    assert not [n for n in node.pod_namespaces() if n[-8:] in uids8]


# --- kubelet lifecycle ----------------------------------------------------------

def test_kubelet_stop_leaves_nothing(kube_cluster: KubeControlPlane, kube: Kube, ns: str,
                                     run_prefix: str) -> None:
    with kubelet_node(kube_cluster, f"{run_prefix}{secrets.token_hex(1)}s", index=2) as n:
        for name in ("a", "b"):
            kube.create_pod(ns, pod_manifest(name, n.name, [netexec()]))
        for name in ("a", "b"):
            kube.wait_pod(ns, name, running_ready, "Running and Ready")
        assert len(n.pod_namespaces()) == 2

        def both_agnhosts() -> dict[int, str] | None:
            # Running is reported once a container's shim runs; its agnhost
            # child may still be starting: wait for what is counted below.
            procs = n.our_processes()
            agnhosts = sum(v.split(" ", 1)[1].startswith(
                f"{sys.executable} -m localcluster.agnhost") for v in procs.values())
            return procs if agnhosts == 2 else None
        procs = eventually(both_agnhosts, 30, "both containers' agnhost processes")
        n.stop_kubelet()
        assert n.pod_namespaces() == []
        assert still_running(procs) == {} and n.our_processes() == {}
        assert len(n.cni_calls("DEL", "test-veth")) == 2
        assert "tv" not in netns_run(n.netns, "ip", "-br", "link")
        assert not list((n.dir / "kubelet" / "pods").iterdir())


def test_kubelet_restart_adopts_running_pods(kube_cluster: KubeControlPlane, kube: Kube,
                                             ns: str, run_prefix: str) -> None:
    with kubelet_node(kube_cluster, f"{run_prefix}{secrets.token_hex(1)}r", index=3,
                      keep_pods=True) as n:
        kube.create_pod(ns, pod_manifest("kept", n.name, [netexec(readinessProbe={
            "httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1})]))
        kube.create_pod(ns, pod_manifest("gone", n.name, [netexec()]))
        p = kube.wait_pod(ns, "kept", running_ready, "Running and Ready")
        g = kube.wait_pod(ns, "gone", running_ready, "Running and Ready")
        ip, cid = p["status"]["podIP"], container_status(p)["containerID"]
        gone_procs = process_tree(g["metadata"]["uid"])
        n.stop_kubelet()  # --keep-pods: the pods keep running
        assert len(n.pod_namespaces()) == 2
        assert curl(n.netns, f"http://{ip}:8080/hostname") == "kept"
        kube.delete_pod(ns, "gone", grace=0)  # while no kubelet is watching
        adds = len(n.cni_calls("ADD"))
        n.keep_pods = False
        n.start_kubelet()
        # The pod deleted meanwhile is cleaned up from the saved state.
        eventually(lambda: len(n.pod_namespaces()) == 1, 30, "the orphan's namespace removed")
        eventually(lambda: still_running(gone_procs) == {}, 30, "the orphan's processes gone")
        assert [d["plugin"] for d in n.cni_calls("DEL", pod="gone")] == \
            ["test-chain", "test-veth"]
        time.sleep(3)
        p = kube.wait_pod(ns, "kept", running_ready, "still Running and Ready")
        cs = container_status(p)
        assert (p["status"]["podIP"], cs["containerID"], cs["restartCount"]) == (ip, cid, 0)
        assert len(n.cni_calls("ADD")) == adds  # not plumbed again
        # A process that dies while adopted is noticed and restarted.
        pid = int(json.loads(next((n.dir / "kubelet" / "pods").glob("*_kept_*/state.json"))
                             .read_text())["containers"]["app"]["proc"]["pid"])
        os.killpg(pid, signal.SIGKILL)
        kube.wait_pod(ns, "kept", lambda p: container_status(p)["restartCount"] == 1
                      and running_ready(p), "restarted after being killed")
        procs = n.our_processes()
        assert procs
        n.stop_kubelet()
        assert n.pod_namespaces() == []
        assert still_running(procs) == {} and n.our_processes() == {}


def test_kubelet_command_line(kube_cluster: KubeControlPlane, kube: Kube, ns: str,
                              run_prefix: str) -> None:
    with kubelet_node(kube_cluster, f"{run_prefix}{secrets.token_hex(1)}c", index=4,
                      start=False) as n:
        cfg = n.config()
        d = Daemon("kubelet", [
            sys.executable, "-m", "localcluster.kubelet", f"--node-name={n.name}",
            f"--kubeconfig={cfg.kubeconfig}", f"--cni-conf-dir={cfg.cni_conf_dir}",
            f"--cni-bin-dir={cfg.cni_bin_dirs[0]}", f"--pod-netns-prefix={n.pod_prefix}",
            f"--state-dir={cfg.state_dir}", f"--node-netns={n.netns}",
        ], n.dir / "kubelet.log", env={"PYTHONPATH": str(REPO)})
        d.start()
        try:
            kube.create_pod(ns, pod_manifest("cli", n.name, [netexec()]))
            p = kube.wait_pod(ns, "cli", running_ready, "Running and Ready")
            assert p["status"]["hostIP"] == n.gateway  # found in the node namespace
            assert condition(kube.get(f"/api/v1/nodes/{n.name}"), "Ready") == "True"
            assert len(n.pod_namespaces()) == 1
            procs = n.our_processes()
            assert any("localcluster.agnhost netexec" in v for v in procs.values())
            os.kill(d.pid, signal.SIGTERM)
            assert d.proc is not None
            assert d.proc.wait(60) == 0
        finally:
            d.stop()
        assert n.pod_namespaces() == []
        assert still_running(procs) == {} and n.our_processes() == {}


def test_node_not_ready_without_cni_config(kube_cluster: KubeControlPlane, kube: Kube,
                                           run_prefix: str) -> None:
    with kubelet_node(kube_cluster, f"{run_prefix}{secrets.token_hex(1)}n", index=5,
                      start=False) as n:
        conf = n.dir / "net.d"
        hidden = n.dir / "net.d.off"
        conf.rename(hidden)
        n.start_kubelet()
        node_path = f"/api/v1/nodes/{n.name}"
        eventually(lambda: condition(kube.get(node_path), "Ready") == "False", 30,
                   "NotReady without a CNI config")
        hidden.rename(conf)  # what the node agent does when it is ready
        eventually(lambda: condition(kube.get(node_path), "Ready") == "True", 30,
                   "Ready once the CNI config is there")


def test_no_leftovers_at_all(node: KubeletNode) -> None:
    """Runs last in this module: no stray agnhost outside the nodes we still run."""
    out = subprocess.run(["pgrep", "-af", "localcluster.agnhost"], capture_output=True,
                         text=True).stdout
    ours = [ln for ln in out.splitlines() if "/tmp/ovk-kl-" in ln and str(node.dir) not in ln]
    assert ours == []
