"""Driving an `ovnkube-local` cluster from tests: manifests, waits, commands
inside pods and nodes (what `kubectl exec` would be on a real cluster)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localcluster.cluster import Cluster
from localcluster.kube import kube_bin
from tests.waiting import eventually

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"


class CommandError(subprocess.CalledProcessError):
    """A failed command whose message carries its stderr (pytest shows it)."""

    def __str__(self) -> str:
        return f"{super().__str__()}: {(self.stderr or '').strip()}"


def wait_for(fn: Callable[[], Any], timeout: float = 90.0, what: str = "condition") -> Any:
    return eventually(fn, timeout, what, interval=0.3)


class E2E:
    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster
        self.nodes = cluster.s.nodes

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 60) -> str:
        res = subprocess.run([kube_bin("kubectl"), f"--kubeconfig={self.c.s.kubeconfig}",
                              *args], input=input, capture_output=True, text=True,
                             timeout=timeout)
        if res.returncode != 0:
            raise CommandError(res.returncode, args, res.stdout, res.stderr)
        return res.stdout

    def apply(self, manifest: str, namespace: str = "default") -> None:
        self.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)

    def get(self, kind: str, name: str, namespace: str = "default") -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", kind, name, "-n", namespace, "-o", "json")))

    def pods(self, selector: str, namespace: str = "default") -> list[dict[str, Any]]:
        out = self.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
        return list(json.loads(out)["items"])

    def ready_pods(self, selector: str, count: int, namespace: str = "default",
                   timeout: float = 120) -> list[dict[str, Any]]:
        def ready() -> list[dict[str, Any]] | None:
            pods = [p for p in self.pods(selector, namespace)
                    if "deletionTimestamp" not in p["metadata"]
                    and any(c["type"] == "Ready" and c["status"] == "True"
                            for c in p["status"].get("conditions", []))]
            return pods if len(pods) == count else None
        try:
            return list(wait_for(ready, timeout, f"{count} ready pods {selector}"))
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.diagnose(selector, namespace)}") from None

    def diagnose(self, selector: str, namespace: str = "default") -> str:
        """What a reader of a failed wait needs: each pod's state and events,
        and any cluster daemon that died (with its last log lines)."""
        lines = []
        for p in self.pods(selector, namespace):
            st = p.get("status", {})
            conds = {c["type"]: c["status"] for c in st.get("conditions", [])}
            waiting = [f"{c['name']}: {next(iter(c.get('state', {})), '?')} "
                       f"{next(iter(c.get('state', {}).values()), {}).get('reason', '')}"
                       for c in st.get("containerStatuses", [])]
            lines.append(f"pod {p['metadata']['name']} on {p['spec'].get('nodeName')}: "
                         f"{st.get('phase')} ip={st.get('podIP')} {conds} {waiting}")
            events = self.kubectl("get", "events", "-n", namespace, "--field-selector",
                                  f"involvedObject.name={p['metadata']['name']}",
                                  "-o", "custom-columns=R:.reason,M:.message", "--no-headers")
            lines += [f"  event {ev}" for ev in events.splitlines()[-5:]]
        try:
            self.c.check_daemons()
        except RuntimeError as err:
            lines.append(str(err))
        return "\n".join(lines)

    def pod_exec(self, pod: dict[str, Any], *cmd: str, timeout: float = 30) -> str:
        node = pod["spec"]["nodeName"]
        ns = self.c.pod_netns(node, pod["metadata"]["uid"])
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True,
                              text=True, timeout=timeout, check=True).stdout

    def node_exec(self, node: str, *cmd: str, timeout: float = 30) -> str:
        return subprocess.run(["ip", "netns", "exec", self.c.s.node_netns(node), *cmd],
                              capture_output=True, text=True, timeout=timeout,
                              check=True).stdout

    def underlay_exec(self, *cmd: str, timeout: float = 30) -> str:
        return subprocess.run(["ip", "netns", "exec", self.c.s.netns("ul"), *cmd],
                              capture_output=True, text=True, timeout=timeout,
                              check=True).stdout

    def curl(self, where: Callable[..., str], url: str, *extra: str, timeout: int = 5) -> str:
        return where("curl", "-sS", "-m", str(timeout), *extra, url)

    def ovn_controller_log(self, node: str) -> str:
        """ovn-controller's log on `node`: our daemon's, or its container's
        when the Helm chart installed the network."""
        s = self.c.s
        if s.cni == "ovn":
            log = next(d.log for d in s.daemons
                       if d.name.startswith("ovn-controller") and d.netns == s.node_netns(node))
            return Path(log).read_text()
        out = self.kubectl("-n", "ovn-kubernetes", "get", "pods", "-l", "app=ovnkube-node",
                           "--field-selector", f"spec.nodeName={node}", "-o", "json")
        (pod,) = json.loads(out)["items"]
        return self.kubectl("-n", "ovn-kubernetes", "logs", pod["metadata"]["name"],
                            "-c", "ovn-controller")

    def node_ip(self, node: str) -> str:
        return self.c.s.node_ip(node)

    @property
    def cp_ip(self) -> str:
        return self.c.s.cp_ip


def netexec_deployment(name: str, replicas: int, extra_args: str = "",
                       readiness: bool = True, node: str | None = None) -> str:
    probe = ("        readinessProbe: {httpGet: {path: /healthz, port: 8080}, "
             "periodSeconds: 1}\n") if readiness else ""
    selector = f"      nodeName: {node}\n" if node else ""
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
{selector}      containers:
      - name: agnhost
        image: {AGNHOST}
        args: ["netexec", "--http-port=8080", "--udp-port=8081"{extra_args}]
{probe}"""
