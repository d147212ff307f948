"""`make demo`: a 2-node cluster, a Deployment of 3 test pods behind a
ClusterIP Service, traffic pod to pod across nodes and pod to Service, and the
OVN objects that carry it. The cluster stays up; the last line says how to
remove it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from localcluster import cluster as lc
from localcluster.ovn import tool_version

NAME = "demo"
MANIFEST = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: agnhost
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: ["netexec", "--http-port=8080"]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
"""


def say(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def run(cmd: list[str], input: str | None = None) -> str:
    return subprocess.run(cmd, input=input, capture_output=True, text=True, check=True,
                          timeout=60).stdout


def main() -> int:
    try:
        lc.load(NAME).down()
        print(f"removed the previous '{NAME}' cluster")
    except LookupError:
        pass
    say(f"bringing up cluster '{NAME}' with 2 nodes")
    c = lc.Cluster.create(NAME, 2, lambda m: print("   " + m, flush=True))
    kubectl = [lc.kube_bin("kubectl"), f"--kubeconfig={c.s.kubeconfig}"]
    say("versions")
    print("   " + run([*kubectl, "version"]).replace("\n", "\n   ").rstrip())
    for tool in ("ovs-vswitchd", "ovn-northd"):
        print(f"   {tool_version(tool)}")

    say("a Deployment of 3 agnhost netexec pods and a ClusterIP Service")
    run([*kubectl, "apply", "-f", "-"], input=MANIFEST)
    deadline = time.monotonic() + 120
    pods: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        items = json.loads(run([*kubectl, "get", "pods", "-l", "app=web", "-o", "json"]))["items"]
        pods = [p for p in items if any(
            cd["type"] == "Ready" and cd["status"] == "True"
            for cd in p["status"].get("conditions", []))]
        if len(pods) == 3:
            break
        time.sleep(0.5)
    else:
        print("pods did not become ready in 120 s; see `ovnkube-local kubectl --name demo -- "
              "get events`", file=sys.stderr)
        return 1
    print(run([*kubectl, "get", "pods", "-o", "wide"]))

    def pod_curl(pod: dict[str, Any], url: str) -> str:
        ns = c.pod_netns(pod["spec"]["nodeName"], pod["metadata"]["uid"])
        return run(["ip", "netns", "exec", ns, "curl", "-sS", "-m", "5", url])

    src = pods[0]
    others = [p for p in pods if p["spec"]["nodeName"] != src["spec"]["nodeName"]] or pods[1:]
    dst = others[0]
    say(f"pod to pod across nodes: {src['metadata']['name']} ({src['spec']['nodeName']}) -> "
        f"{dst['status']['podIP']} ({dst['spec']['nodeName']})")
    dst_url = "http://{}:8080/hostname".format(dst["status"]["podIP"])
    print(f"   /hostname answered: {pod_curl(src, dst_url)}")
    svc = json.loads(run([*kubectl, "get", "svc", "web", "-o", "json"]))
    vip = svc["spec"]["clusterIP"]
    say(f"pod to Service web ({vip}:80), 6 requests")
    for _ in range(6):
        print(f"   answered by {pod_curl(src, f'http://{vip}:80/hostname')}")
    say("ovn-nbctl show")
    print(c.nbctl("show"))
    say("the Service's load balancer")
    print(c.nbctl("lb-list"))
    print(c.nbctl("--columns=name,vips,protocol,options", "find", "Load_Balancer",
                  'name="Service_default/web_TCP_cluster"'))
    say("the cluster stays up; try it yourself:")
    print(f"   export KUBECONFIG={c.s.kubeconfig}\n"
          f"   .venv/bin/ovnkube-local kubectl --name {NAME} -- get pods -o wide\n"
          f"   kubectl exec {src['metadata']['name']} -- curl -s {vip}/hostname\n"
          f"   kubectl run -it --rm bb --image=busybox -- nslookup web.default\n"
          f"   .venv/bin/ovnkube-local nbctl --name {NAME} -- show\n"
          f"tear it down with:  .venv/bin/ovnkube-local down --name {NAME}   (or make demo-down)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
