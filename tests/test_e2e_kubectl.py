"""What users type first, on an `ovnkube-local` cluster whose nodes run the
real kubelet over our CRI runtime: kubectl exec, logs, port-forward, volumes,
cluster DNS, busybox. Everything goes through the apiserver and the kubelet,
as on any cluster."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.kube import kube_bin
from tests.e2e_helpers import AGNHOST, E2E, CommandError, wait_for

NS = "kubectl-e2e"


@pytest.fixture(scope="module")
def e(local_cluster: E2E) -> Iterator[E2E]:
    local_cluster.kubectl("create", "namespace", NS)
    try:
        yield local_cluster
    finally:
        local_cluster.kubectl("delete", "namespace", NS, "--wait=false")


def _pod(e: E2E, manifest: str, name: str) -> None:
    e.apply(manifest, NS)
    e.kubectl("wait", "-n", NS, "--for=condition=Ready", f"pod/{name}", "--timeout=120s",
              timeout=130)


def test_exec_stdout_stderr_stdin_and_exit_code(e: E2E) -> None:
    e.kubectl("run", "-n", NS, "sh", "--image=busybox", "--", "sleep", "3600")
    e.kubectl("wait", "-n", NS, "--for=condition=Ready", "pod/sh", "--timeout=120s",
              timeout=130)
    assert e.kubectl("exec", "-n", NS, "sh", "--", "hostname").strip() == "sh"
    out = e.kubectl("exec", "-i", "-n", NS, "sh", "--", "sh", "-c", "tr a-z A-Z; echo err >&2",
                    input="piped through\n")
    assert out == "PIPED THROUGH\n"
    with pytest.raises(CommandError) as err:
        e.kubectl("exec", "-n", NS, "sh", "--", "sh", "-c", "echo partial; exit 7")
    assert err.value.returncode == 7
    assert err.value.stdout == "partial\n"
    with pytest.raises(CommandError, match='"no-such-program": executable file not found'):
        e.kubectl("exec", "-n", NS, "sh", "--", "no-such-program")


def test_image_programs_are_at_their_paths_inside_the_container(e: E2E) -> None:
    """Upstream tests run `sh -c "/agnhost connect ..."` inside agnhost pods."""
    e.kubectl("run", "-n", NS, "agn", f"--image={AGNHOST}", "--", "pause")
    e.kubectl("wait", "-n", NS, "--for=condition=Ready", "pod/agn", "--timeout=120s",
              timeout=130)
    out = e.kubectl("exec", "-n", NS, "agn", "--", "sh", "-c",
                    "/agnhost connect --timeout=1s 127.0.0.1:1 2>&1; echo rc=$?")
    assert out == "REFUSED\nrc=1\n", out


def test_logs_follow_previous_and_restart(e: E2E) -> None:
    _pod(e, """apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo run $(cat /proc/self/stat | cut -d' ' -f1); echo -n no-newline; sleep 2; echo; echo done; sleep 1; exit 3"]
""", "talker")  # noqa: E501
    wait_for(lambda: int(e.get("pod", "talker", NS)["status"]["containerStatuses"][0]
                         .get("restartCount", 0)) >= 1, 60, "a restart")
    prev = e.kubectl("logs", "-n", NS, "talker", "--previous")
    assert prev.startswith("run ") and "no-newline\ndone\n" in prev
    st = e.get("pod", "talker", NS)["status"]["containerStatuses"][0]
    assert st["lastState"]["terminated"]["exitCode"] == 3
    # --timestamps shows the CRI log's own times.
    stamped = e.kubectl("logs", "-n", NS, "talker", "--previous", "--timestamps")
    assert all(line[:4].isdigit() and "T" in line.split(" ")[0]
               for line in stamped.splitlines())


def test_port_forward_carries_requests_both_ways(e: E2E) -> None:
    _pod(e, f"""apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  containers:
  - name: web
    image: {AGNHOST}
    args: ["netexec", "--http-port=8080"]
    readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}
""", "web")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pf = subprocess.Popen([kube_bin("kubectl"), f"--kubeconfig={e.c.s.kubeconfig}", "-n", NS,
                           "port-forward", "pod/web", f"{port}:8080"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert pf.stdout is not None
        assert "Forwarding from 127.0.0.1" in pf.stdout.readline()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{port}/hostname", timeout=10) as r:
            assert r.read().decode() == "web"
        body = b"x" * (3 << 20)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/echo?msg=big", data=body,
                                     method="POST")
        with opener.open(req, timeout=30) as r:
            assert r.status == 200
    finally:
        pf.terminate()
        pf.wait(10)
        if pf.stderr:
            pf.stderr.close()
        if pf.stdout:
            pf.stdout.close()


def test_volumes_env_and_downward_api(e: E2E) -> None:
    e.kubectl("create", "configmap", "-n", NS, "cm", "--from-literal=greeting=hi")
    e.kubectl("create", "secret", "generic", "-n", NS, "sec", "--from-literal=pw=s3cret")
    _pod(e, """apiVersion: v1
kind: Pod
metadata: {name: vols, labels: {tier: test}}
spec:
  containers:
  - name: a
    image: busybox
    command: ["sh", "-c", "echo shared > /scratch/f; sleep 3600"]
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: cm, key: greeting}}}
    volumeMounts:
    - {name: cfg, mountPath: /etc/cfg}
    - {name: sec, mountPath: /etc/sec, readOnly: true}
    - {name: scratch, mountPath: /scratch}
    - {name: info, mountPath: /etc/podinfo}
    - {name: host, mountPath: /host-tmp, readOnly: true}
  - name: b
    image: busybox
    command: ["sleep", "3600"]
    volumeMounts:
    - {name: scratch, mountPath: /scratch}
  volumes:
  - {name: cfg, configMap: {name: cm}}
  - {name: sec, secret: {secretName: sec}}
  - {name: scratch, emptyDir: {}}
  - name: info
    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
  - name: host
    hostPath: {path: /etc, type: Directory}
""", "vols")

    def sh(container: str, cmd: str) -> str:
        return e.kubectl("exec", "-n", NS, "vols", "-c", container, "--", "sh", "-c", cmd)
    assert sh("a", "echo $POD_NAME $GREETING") == "vols hi\n"
    assert sh("a", "cat /etc/cfg/greeting /etc/sec/pw") == "his3cret"
    assert sh("a", "cat /etc/podinfo/labels") == 'tier="test"'
    assert sh("b", "cat /scratch/f") == "shared\n"  # one emptyDir, two containers
    assert sh("a", "cat /host-tmp/hostname") == Path("/etc/hostname").read_text()
    token = sh("a", "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace")
    assert token == NS
    with pytest.raises(CommandError, match="Read-only file system"):
        sh("a", "echo x > /etc/sec/pw")
    # Another pod's container does not see these mounts.
    with pytest.raises(CommandError):
        e.kubectl("exec", "-n", NS, "sh", "--", "cat", "/etc/cfg/greeting")


def test_cluster_dns_names_services_pods_and_external_names(e: E2E) -> None:
    _pod(e, f"""apiVersion: v1
kind: Pod
metadata: {{name: dnsweb, labels: {{app: dnsweb}}}}
spec:
  containers:
  - name: web
    image: {AGNHOST}
    args: ["netexec", "--http-port=8080"]
    readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: dnsweb}}
spec:
  selector: {{app: dnsweb}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: elsewhere}}
spec:
  type: ExternalName
  externalName: dnsweb.{NS}.svc.cluster.local
""", "dnsweb")
    svc_ip = e.get("service", "dnsweb", NS)["spec"]["clusterIP"]
    resolv = e.kubectl("exec", "-n", NS, "sh", "--", "cat", "/etc/resolv.conf")
    assert "nameserver 10.96.0.10" in resolv
    assert f"search {NS}.svc.cluster.local svc.cluster.local cluster.local" in resolv
    assert "ndots:5" in resolv

    def lookup(name: str) -> str:
        return e.kubectl("exec", "-n", NS, "sh", "--", "nslookup", name)
    assert svc_ip in wait_for(lambda: lookup("dnsweb"), 60, "dnsweb resolves")
    assert "10.96.0.1" in lookup("kubernetes.default")
    # A headless Service answers with its pods' addresses, from either node.
    e.apply("""apiVersion: v1
kind: Service
metadata: {name: dnsweb-headless}
spec:
  clusterIP: None
  selector: {app: dnsweb}
  ports: [{port: 80, targetPort: 8080}]
""", NS)
    pod_ip = e.get("pod", "dnsweb", NS)["status"]["podIP"]
    for node in e.nodes:
        e.kubectl("run", "-n", NS, f"q-{node}", "--image=busybox",
                  f"--overrides={json.dumps({'spec': {'nodeName': node}})}", "--",
                  "sleep", "3600")
        e.kubectl("wait", "-n", NS, "--for=condition=Ready", f"pod/q-{node}",
                  "--timeout=120s", timeout=130)
        got = wait_for(lambda n=node: pod_ip in e.kubectl(
            "exec", "-n", NS, f"q-{n}", "--", "nslookup", "dnsweb-headless"), 60,
            f"headless A record from {node}")
        assert got
    assert "dnsweb" in lookup(f"elsewhere.{NS}.svc.cluster.local")  # the CNAME
    # By name, over the Service: what every manifest does.
    got = e.kubectl("exec", "-n", NS, "sh", "--", "wget", "-qO-", "-T", "5",
                    "http://dnsweb/hostname")
    assert got == "dnsweb"
    t0 = time.monotonic()
    with pytest.raises(CommandError):
        lookup("example.com")  # no upstream here: refused, not hanging
    assert time.monotonic() - t0 < 30


def test_nodes_show_the_runtime_and_serve_the_kubelet_api(e: E2E) -> None:
    nodes = json.loads(e.kubectl("get", "nodes", "-o", "json"))["items"]
    for n in nodes:
        info = n["status"]["nodeInfo"]
        assert info["containerRuntimeVersion"].startswith("ovnkube-local://")
        assert info["kubeletVersion"] == "v1.33.13"
        assert any(a["type"] == "InternalIP" for a in n["status"]["addresses"])
    # The kubelet's own API answers through the apiserver's node proxy.
    pods = json.loads(e.kubectl("get", "--raw",
                                f"/api/v1/nodes/{nodes[0]['metadata']['name']}/proxy/pods"))
    assert pods["kind"] == "PodList"


def test_host_ports_from_the_node_and_from_outside(e: E2E) -> None:
    node = e.nodes[0]
    _pod(e, f"""apiVersion: v1
kind: Pod
metadata: {{name: hp}}
spec:
  nodeName: {node}
  containers:
  - name: web
    image: {AGNHOST}
    args: ["netexec", "--http-port=8080", "--udp-port=8081"]
    ports:
    - {{containerPort: 8080, hostPort: 38080}}
    - {{containerPort: 8081, hostPort: 38081, protocol: UDP}}
    readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}
""", "hp")
    node_ip = e.c.s.node_ip(node)

    def curl(where, url: str) -> str:  # type: ignore[no-untyped-def]
        return str(where("curl", "-sS", "-m", "5", url))
    assert curl(lambda *a: e.node_exec(node, *a), "http://127.0.0.1:38080/hostname") == "hp"
    assert curl(lambda *a: e.node_exec(node, *a), f"http://{node_ip}:38080/hostname") == "hp"
    assert curl(e.underlay_exec, f"http://{node_ip}:38080/hostname") == "hp"
    udp = e.underlay_exec("sh", "-c", f"echo hostname | nc -u -w 2 {node_ip} 38081")
    assert udp == "hp"
    e.kubectl("delete", "pod", "-n", NS, "hp", "--wait=true", timeout=90)
    with pytest.raises(subprocess.CalledProcessError):
        curl(e.underlay_exec, f"http://{node_ip}:38080/hostname")


def test_kubectl_cp_logs_follow_and_sub_path(e: E2E, tmp_path: Path) -> None:
    e.kubectl("create", "configmap", "-n", NS, "sub", "--from-literal=a.conf=A",
              "--from-literal=b.conf=B")
    _pod(e, """apiVersion: v1
kind: Pod
metadata: {name: cpf}
spec:
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.3; done"]
    volumeMounts:
    - {name: sub, mountPath: /etc/only-b.conf, subPath: b.conf}
  volumes:
  - {name: sub, configMap: {name: sub}}
""", "cpf")
    assert e.kubectl("exec", "-n", NS, "cpf", "--", "cat", "/etc/only-b.conf") == "B"
    src = tmp_path / "up.txt"
    src.write_text("copied in\n")
    e.kubectl("cp", str(src), f"{NS}/cpf:/tmp/ovk-e2e-cp.txt")
    assert e.kubectl("exec", "-n", NS, "cpf", "--", "cat", "/tmp/ovk-e2e-cp.txt") == \
        "copied in\n"
    back = tmp_path / "down.txt"
    e.kubectl("cp", f"{NS}/cpf:/tmp/ovk-e2e-cp.txt", str(back))
    assert back.read_text() == "copied in\n"
    e.kubectl("exec", "-n", NS, "cpf", "--", "rm", "/tmp/ovk-e2e-cp.txt")
    # -f keeps streaming: lines written after it started arrive.
    f = subprocess.Popen([kube_bin("kubectl"), f"--kubeconfig={e.c.s.kubeconfig}", "-n", NS,
                          "logs", "-f", "--tail=1", "cpf"], stdout=subprocess.PIPE, text=True)
    try:
        assert f.stdout is not None
        first = int(f.stdout.readline().split()[1])
        later = [int(f.stdout.readline().split()[1]) for _ in range(3)]
        assert later == [first + 1, first + 2, first + 3]
    finally:
        f.terminate()
        f.wait(10)
        if f.stdout:
            f.stdout.close()


def test_in_cluster_client_has_its_service_accounts_rights(e: E2E) -> None:
    e.apply(f"""apiVersion: v1
kind: ServiceAccount
metadata: {{name: lister}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: list-pods}}
rules: [{{apiGroups: [""], resources: [pods], verbs: [list]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: lister}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: list-pods}}
subjects: [{{kind: ServiceAccount, name: lister, namespace: {NS}}}]
""", NS)
    _pod(e, """apiVersion: v1
kind: Pod
metadata: {name: incluster}
spec:
  serviceAccountName: lister
  containers:
  - {name: c, image: ovnkube-py, command: ["sleep", "3600"]}
""", "incluster")
    script = ("from kubernetes import client, config\n"
              "config.load_incluster_config()\n"
              "v1 = client.CoreV1Api()\n"
              f"print(sorted(p.metadata.name for p in v1.list_namespaced_pod('{NS}').items))\n"
              "try:\n"
              "    v1.list_node()\n"
              "except client.ApiException as e:\n"
              "    print('nodes:', e.status)\n")
    out = e.kubectl("exec", "-n", NS, "incluster", "--", "python3", "-c", script)
    assert "'incluster'" in out.splitlines()[0]
    assert out.splitlines()[1] == "nodes: 403"


def test_kubectl_run_interactive_attaches_and_removes_the_pod(e: E2E) -> None:
    out = e.kubectl("run", "-n", NS, "att", "-i", "--rm", "--restart=Never",
                    "--image=busybox", "--", "sh", "-c", "read x; echo got $x",
                    input="hello\n", timeout=120)
    assert "got hello" in out
    wait_for(lambda: "att" not in e.kubectl("get", "pods", "-n", NS, "-o", "name"), 60,
             "the pod removed")
