"""Running `ovnkube master` as a real process against a real apiserver and NB."""

from __future__ import annotations

import contextlib
import json
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kubernetes import client

from localcluster.kube import KubeControlPlane
from localcluster.ovn import OvnCentral
from localcluster.procs import Daemon, DaemonSet
from ovnkube.annotations import L3_GATEWAY_CONFIG, NODE_CHASSIS_ID, L3GatewayConfig
from tests.waiting import eventually as eventually  # re-exported for the tests

ROOT = Path(__file__).resolve().parent.parent


def start_master(cp: KubeControlPlane, central: OvnCentral, workdir: Path, name: str = "master",
                 *extra: str) -> Daemon:
    d = Daemon(name, [sys.executable, "-m", "ovnkube.cli", "master",
                      f"--nb-address={central.nb_unix}", f"--k8s-kubeconfig={cp.kubeconfig}",
                      "--loglevel=info", *extra],
               workdir / f"{name}.log", env={"PYTHONPATH": str(ROOT)})
    return d.start()


def run_master(masters: DaemonSet, cp: KubeControlPlane, central: OvnCentral, workdir: Path,
               name: str = "master") -> Daemon:
    """A master without leader election, added to `masters`; returns once started."""
    d = start_master(cp, central, workdir, name, "--no-leader-elect")
    masters.daemons.append(d)
    eventually(lambda: "master started" in d.log_path.read_text(), timeout=90,
               what=f"{name} started")
    return d


class KubeObjects:
    """Creates namespaces, nodes and pods for a test and deletes them after."""

    def __init__(self, cp: KubeControlPlane) -> None:
        self.api = cp.api_client()
        self.core = client.CoreV1Api(self.api)
        self.suffix = secrets.token_hex(2)
        self.nodes: list[str] = []
        self.namespaces: list[str] = []

    def namespace(self, prefix: str = "t") -> str:
        ns = f"{prefix}-{self.suffix}"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        self.core.create_namespaced_service_account(ns, client.V1ServiceAccount(
            metadata=client.V1ObjectMeta(name="default")))
        self.namespaces.append(ns)
        return ns

    def node(self, base: str, chassis: bool = True, gateway_ip: str | None = None) -> str:
        name = f"{base}-{self.suffix}"
        ann = {}
        if chassis:
            ann[NODE_CHASSIS_ID] = f"chassis-{name}"
        if gateway_ip:
            import ipaddress
            ann[L3_GATEWAY_CONFIG] = L3GatewayConfig(
                "shared", f"br-ex_{name}", "02:00:00:00:00:" + gateway_ip.split(".")[-1].zfill(2),
                (ipaddress.ip_interface(f"{gateway_ip}/24"),),
                (ipaddress.ip_address(gateway_ip.rsplit(".", 1)[0] + ".1"),)).to_annotation()
        self.core.create_node(client.V1Node(metadata=client.V1ObjectMeta(
            name=name, annotations=ann)))
        self.nodes.append(name)
        return name

    def pod(self, ns: str, name: str, node: str) -> None:
        self.core.create_namespaced_pod(ns, client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels={"app": "t"}),
            spec=client.V1PodSpec(node_name=node, automount_service_account_token=False,
                                  containers=[client.V1Container(name="c", image="pause")])))

    def delete_pod(self, ns: str, name: str) -> None:
        self.core.delete_namespaced_pod(name, ns, grace_period_seconds=0)

    def pods(self, ns: str) -> list[dict[str, Any]]:
        from ovnkube.kubeclient import request
        return list(request(self.api, "GET", f"/api/v1/namespaces/{ns}/pods")["items"])

    def node_obj(self, name: str) -> dict[str, Any]:
        from ovnkube.kubeclient import node_path, request
        return request(self.api, "GET", node_path(name))

    def cleanup(self) -> None:
        for ns in self.namespaces:
            try:
                for p in self.pods(ns):
                    self.core.delete_namespaced_pod(p["metadata"]["name"], ns,
                                                    grace_period_seconds=0)
                self.core.delete_namespace(ns)
            except client.ApiException:
                pass
        for n in self.nodes:
            with contextlib.suppress(client.ApiException):
                self.core.delete_node(n)


def lsps(central: OvnCentral) -> dict[str, dict[str, str]]:
    """LSP name -> {addresses, external_ids} as the real ovn-nbctl reports them."""
    out = central.nbctl("--format=json", "--columns=name,addresses,external_ids",
                        "list", "Logical_Switch_Port")
    data = json.loads(out)
    res = {}
    for name, addresses, ext in data["data"]:
        addr = addresses[1] if isinstance(addresses, list) else [addresses]
        res[name] = {"addresses": ",".join(addr), "external_ids": dict(ext[1])}
    return res


def pod_iter(pods: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for p in pods:
        yield f"{p['metadata']['namespace']}_{p['metadata']['name']}", p
