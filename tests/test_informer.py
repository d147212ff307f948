"""Informers and work queues against a real kube-apiserver."""

from __future__ import annotations

import threading
import time

from kubernetes import client

from localcluster.kube import KubeControlPlane
from ovnkube.informer import Informer
from ovnkube.kubeclient import ResourceAPI, patch_annotations, pod_path
from ovnkube.workqueue import WorkQueue


def _wait(cond, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_informer_lists_watches_and_sees_deletes(kube_api: KubeControlPlane) -> None:
    api = kube_api.api_client()
    core = client.CoreV1Api(api)
    ns = "informer-test"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    core.create_namespaced_service_account(ns, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="default")))

    def pod(name: str) -> client.V1Pod:
        return client.V1Pod(metadata=client.V1ObjectMeta(name=name), spec=client.V1PodSpec(
            automount_service_account_token=False,
            containers=[client.V1Container(name="c", image="pause")]))

    core.create_namespaced_pod(ns, pod("before"))
    events: list[tuple[str, bool]] = []
    inf = Informer(ResourceAPI(api, f"/api/v1/namespaces/{ns}/pods", "Pod"), resync_period=5)
    inf.add_handler(lambda key, old, new: events.append((key, new is not None)))
    inf.start()
    try:
        assert inf.wait_synced(30)
        assert inf.get(f"{ns}/before") is not None
        core.create_namespaced_pod(ns, pod("after"))
        _wait(lambda: inf.get(f"{ns}/after") is not None)
        patch_annotations(api, pod_path(ns, "after"), {"x": "1"})
        _wait(lambda: (inf.get(f"{ns}/after") or {}).get("metadata", {})
              .get("annotations", {}).get("x") == "1")
        core.delete_namespaced_pod("before", ns, grace_period_seconds=0)
        _wait(lambda: inf.get(f"{ns}/before") is None)
        assert (f"{ns}/before", False) in events
        # A re-list reports deletions missed while not watching.
        core.delete_namespaced_pod("after", ns, grace_period_seconds=0)
        _wait(lambda: inf.get(f"{ns}/after") is None)
        inf.relist()
        assert inf.keys() == []
        # The periodic resync re-delivers cached objects (none left: no events).
    finally:
        inf.stop()


def test_workqueue_one_worker_per_key_and_retries() -> None:
    running: dict[str, int] = {}
    overlap = []
    done: list[str] = []
    lock = threading.Lock()
    fails = {"b": 2}

    def handle(key: str) -> None:
        with lock:
            running[key] = running.get(key, 0) + 1
            if running[key] > 1:
                overlap.append(key)
        time.sleep(0.02)
        with lock:
            running[key] -= 1
        if fails.get(key, 0) > 0:
            fails[key] -= 1
            raise RuntimeError("transient")
        with lock:
            done.append(key)

    q = WorkQueue("t", handle, workers=4, base_delay=0.01)
    q.start()
    try:
        for _ in range(20):
            for k in "abc":
                q.add(k)
        _wait(q.idle)
    finally:
        q.stop()
    assert not overlap
    assert set(done) == {"a", "b", "c"}
    assert fails["b"] == 0  # retried after failures
