"""The Helm chart renders, the real apiserver accepts it, and its RBAC is
enough for `ovnkube master` to do its work with the chart's ServiceAccount."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from localcluster.kube import KubeControlPlane, kube_bin, write_kubeconfig
from localcluster.ovn import OvnCentral
from localcluster.procs import DaemonSet
from tests.master_helpers import KubeObjects, eventually, lsps, start_master

CHART = Path(__file__).resolve().parent.parent / "helm" / "ovn-kubernetes-py"
VALUES = ["--set", "kubernetes.apiServerHost=172.31.255.1", "--set", "ovn.centralNode=n1",
          "--set", "ovn.centralIP=172.31.255.1"]
NS = "ovn-kubernetes"


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([kube_bin("helm"), *args], capture_output=True, text=True,
                          timeout=60)


def test_lint_and_required_values() -> None:
    res = helm("lint", str(CHART), *VALUES)
    assert res.returncode == 0, res.stdout + res.stderr
    res = helm("template", "t", str(CHART))
    assert res.returncode != 0
    # values.schema.json names each missing value (tests/test_helm_static.py has more)
    assert "/kubernetes/apiServerHost" in res.stderr and "/ovn/centralIP" in res.stderr


@pytest.fixture(scope="module")
def installed(kube_api: KubeControlPlane) -> Iterator[str]:
    """The chart applied once per module (without a namespace controller in
    this test bed, a deleted namespace never finishes terminating)."""
    rendered = helm("template", "t", str(CHART), "-n", NS, *VALUES)
    assert rendered.returncode == 0, rendered.stderr
    kubectl = [kube_bin("kubectl"), f"--kubeconfig={kube_api.kubeconfig}"]
    # what `helm install -n NS --create-namespace` makes first
    subprocess.run([*kubectl, "create", "namespace", NS], capture_output=True, timeout=60)
    try:
        res = subprocess.run([*kubectl, "apply", "-f", "-"], input=rendered.stdout,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        yield rendered.stdout
    finally:
        subprocess.run([*kubectl, "delete", "--wait=false", "--ignore-not-found", "-f", "-"],
                       input=rendered.stdout, capture_output=True, text=True, timeout=60)


def test_apiserver_accepts_the_chart(installed: str, kube_api: KubeControlPlane) -> None:
    apps = client.AppsV1Api(kube_api.api_client())
    assert {d.metadata.name for d in apps.list_namespaced_deployment(NS).items} == {
        "ovnkube-db", "ovnkube-master"}
    containers = {ds.metadata.name: [c.name for c in ds.spec.template.spec.containers]
                  for ds in apps.list_namespaced_daemon_set(NS).items}
    # OVS apart, as ovn-kubernetes has it: rolling the agent leaves the datapath up
    assert containers == {"ovnkube-node": ["ovn-controller", "ovnkube-node"],
                          "ovs-node": ["ovs"]}


def test_chart_rbac_is_enough_for_the_master(installed: str, kube_api: KubeControlPlane,
                                             ovn_central: OvnCentral, workdir: Path) -> None:
    kubectl = [kube_bin("kubectl"), f"--kubeconfig={kube_api.kubeconfig}"]
    token = subprocess.run([*kubectl, "create", "token", "ovnkube-master", "-n", NS],
                           capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    sa_kubeconfig = write_kubeconfig(workdir / "master-sa.kubeconfig", kube_api.server,
                                     kube_api.pki / "ca.crt", token)
    # The node agent's rights, checked by the apiserver's own authorizer.
    for verb, resource in (("patch", "nodes"), ("watch", "pods"), ("create", "events"),
                           ("watch", "services"), ("watch", "endpointslices.discovery.k8s.io")):
        out = subprocess.run([*kubectl, "auth", "can-i", verb, resource,
                              f"--as=system:serviceaccount:{NS}:ovnkube-node"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        assert out == "yes", (verb, resource)
    assert subprocess.run([*kubectl, "auth", "can-i", "delete", "pods",
                           f"--as=system:serviceaccount:{NS}:ovnkube-node"],
                          capture_output=True, text=True, timeout=30).stdout.strip() == "no"

    # Run the master as the chart's ServiceAccount (the last --k8s-kubeconfig
    # wins): it must do all its work.
    ds = DaemonSet()
    k = KubeObjects(kube_api)
    try:
        d = start_master(kube_api, ovn_central, workdir, "sa-master",
                         f"--lease-namespace={NS}", f"--k8s-kubeconfig={sa_kubeconfig}")
        ds.daemons.append(d)
        node = k.node("rbac")
        ns = k.namespace("rbac")
        k.pod(ns, "p", node)
        eventually(lambda: f"{ns}_p" in lsps(ovn_central), what="pod port from the SA master")
        pod = k.core.read_namespaced_pod("p", ns)
        assert "k8s.ovn.org/pod-networks" in (pod.metadata.annotations or {})
        lease = client.CoordinationV1Api(k.api).read_namespaced_lease(
            "ovn-kubernetes-master", NS)
        assert lease.spec.holder_identity
        assert "Forbidden" not in d.log_path.read_text()
    finally:
        ds.stop()
        k.cleanup()
