"""The Kubernetes test bed is a real apiserver reached through the official client."""

from __future__ import annotations

import threading
import time

from kubernetes import client, watch

from localcluster import netns as nets
from localcluster.kube import KubeControlPlane
from localcluster.procs import run


def _pod(name: str) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app": "t"}),
        spec=client.V1PodSpec(automount_service_account_token=False,
                              containers=[client.V1Container(name="c", image="pause")]))


def test_apiserver_advertises_a_namespace_address(kube_api: KubeControlPlane) -> None:
    assert kube_api.version().startswith("v1.")
    # The advertise address lives on a dummy interface inside the namespace...
    assert "172.31.255.1/32" in run(["ip", "-br", "addr", "show", "apiserver0"],
                                    netns=kube_api.netns)
    assert nets.link_index("apiserver0") is None
    # ...and the `kubernetes` Service's endpoints point at it.
    api = client.CoreV1Api(kube_api.api_client())
    eps = api.read_namespaced_endpoints("kubernetes", "default")
    assert [a.ip for s in eps.subsets for a in s.addresses] == ["172.31.255.1"]
    svc = api.read_namespaced_service("kubernetes", "default")
    assert svc.spec.cluster_ip == "10.96.0.1"


def test_kubectl_uses_the_kubeconfig(kube_api: KubeControlPlane) -> None:
    out = kube_api.kubectl("version", "-o", "json")
    assert '"gitVersion": "v1.' in out
    assert "kube-system" in kube_api.kubectl("get", "namespaces")


def test_rbac_is_enforced(kube_api: KubeControlPlane) -> None:
    # An unknown token is rejected; RBAC is among the authorizers.
    bad = client.Configuration()
    bad.host = kube_api.server
    bad.ssl_ca_cert = str(kube_api.pki / "ca.crt")
    bad.api_key = {"authorization": "Bearer wrong"}
    try:
        client.CoreV1Api(client.ApiClient(bad)).list_namespace()
        raise AssertionError("an unknown token was accepted")
    except client.ApiException as e:
        assert e.status == 401
    api = client.RbacAuthorizationV1Api(kube_api.api_client())
    assert any(r.metadata.name == "cluster-admin" for r in api.list_cluster_role().items)


def test_pod_created_and_watched(kube_api: KubeControlPlane) -> None:
    api = client.CoreV1Api(kube_api.api_client())
    ns = "watch-test"
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    # No controller-manager here: make the ServiceAccount admission needs.
    api.create_namespaced_service_account(ns, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="default")))
    listed = api.list_namespaced_pod(ns)
    seen: list[tuple[str, str]] = []

    def watcher() -> None:
        w = watch.Watch()
        for ev in w.stream(api.list_namespaced_pod, ns,
                           resource_version=listed.metadata.resource_version,
                           timeout_seconds=30):
            seen.append((ev["type"], ev["object"].metadata.name))
            if ev["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=watcher)
    t.start()
    time.sleep(0.5)
    api.create_namespaced_pod(ns, _pod("p1"))
    api.delete_namespaced_pod("p1", ns, grace_period_seconds=0)
    t.join(40)
    assert ("ADDED", "p1") in seen and ("DELETED", "p1") in seen


def test_endpointslice_appears_for_a_service(kube_cluster: KubeControlPlane) -> None:
    c = kube_cluster.api_client()
    core, disc = client.CoreV1Api(c), client.DiscoveryV1Api(c)
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="n1")))
    core.create_namespaced_service("default", client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(selector={"app": "web"},
                                  ports=[client.V1ServicePort(port=80, target_port=8080)])))
    pod = _pod("web-1")
    pod.metadata.labels = {"app": "web"}
    pod.spec.node_name = "n1"
    # The serviceaccount controller makes "default"; wait for it like kubelet-less
    # clients must.
    _eventually(lambda: core.read_namespaced_service_account("default", "default"))
    core.create_namespaced_pod("default", pod)
    # No kubelet here: report the pod running and ready the way a kubelet would.
    core.patch_namespaced_pod_status("web-1", "default", {"status": {
        "phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}],
        "conditions": [{"type": "Ready", "status": "True"}]}})

    def ready_slice() -> client.V1EndpointSlice:
        slices = disc.list_namespaced_endpoint_slice(
            "default", label_selector="kubernetes.io/service-name=web").items
        assert slices and slices[0].endpoints, "no EndpointSlice with endpoints yet"
        return slices[0]

    s = _eventually(ready_slice)
    assert s.ports[0].port == 8080
    assert s.endpoints[0].addresses == ["10.244.1.5"]
    assert s.endpoints[0].conditions.ready is True
    assert s.endpoints[0].node_name == "n1"


def _eventually(fn, timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (AssertionError, client.ApiException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
