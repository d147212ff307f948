"""The node agent's view of Kubernetes: its Node, and the pods bound to it
(one list+watch shared by every CNI ADD waiting for its pod's annotation)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from tenacity import (
    RetryError,
    Retrying,
    before_sleep_log,
    retry,
    retry_if_exception_type,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential,
)
from urllib3.exceptions import HTTPError

from ovnkube.kubeclient import api_client, post_event

log = logging.getLogger(__name__)

_TRANSIENT = (ApiException, HTTPError, OSError)


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    uid: str
    annotations: dict[str, str]


class PodGone(Exception):
    """The pod was deleted, or replaced by one with another UID."""


class Kube:
    def __init__(self, kubeconfig: str, node_name: str) -> None:
        self.api_client = api_client(kubeconfig)
        self.core = client.CoreV1Api(self.api_client)
        self.node_name = node_name

    def close(self) -> None:
        self.api_client.close()

    @retry(retry=retry_if_exception_type(_TRANSIENT), stop=stop_after_delay(60),
           wait=wait_exponential(multiplier=0.2, max=5), reraise=True,
           before_sleep=before_sleep_log(log, logging.WARNING))
    def node_annotations(self) -> dict[str, str]:
        node: Any = self.core.read_node(self.node_name)
        return dict(node.metadata.annotations or {})

    @retry(retry=retry_if_exception_type(_TRANSIENT), stop=stop_after_delay(60),
           wait=wait_exponential(multiplier=0.2, max=5), reraise=True,
           before_sleep=before_sleep_log(log, logging.WARNING))
    def annotate_node(self, annotations: dict[str, str | None]) -> None:
        self.core.patch_node(self.node_name, {"metadata": {"annotations": annotations}})

    def post_pod_event(self, namespace: str, pod: str, uid: str, reason: str,
                       message: str) -> None:
        """A Warning Event on the pod, so `kubectl describe pod` says why (best effort)."""
        post_event(self.core, {"kind": "Pod", "metadata": {
            "namespace": namespace, "name": pod, "uid": uid or None}},
            reason, message, component="ovnkube-node", host=self.node_name)


class PodCache:
    """Pods on this node, kept current by one list+watch in a thread."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.pods: dict[tuple[str, str], PodInfo] = {}
        self.deleted_uids: set[str] = set()
        self.cond = threading.Condition()
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread = threading.Thread(target=self._run, name="pod-watch", daemon=True)

    def start(self) -> PodCache:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        self._thread.join(5)

    def _selector(self) -> str:
        return f"spec.nodeName={self.kube.node_name}"

    def _run(self) -> None:
        # Relist and rewatch after any failure (410 Gone, apiserver restart...).
        retrying = Retrying(retry=retry_if_exception_type(Exception),
                            stop=stop_when_event_set(self._stop),
                            wait=wait_exponential(multiplier=0.2, max=5),
                            before_sleep=before_sleep_log(log, logging.WARNING))
        try:
            for attempt in retrying:
                with attempt:
                    self._list_and_watch()
        except RetryError:
            pass
        except Exception:
            if not self._stop.is_set():
                log.exception("pod watch ended")

    @staticmethod
    def _info(pod: Any) -> PodInfo:
        m = pod.metadata
        return PodInfo(m.namespace, m.name, m.uid, dict(m.annotations or {}))

    def _list(self) -> str:
        pods: Any = self.kube.core.list_pod_for_all_namespaces(
            field_selector=self._selector())
        with self.cond:
            infos = [self._info(p) for p in pods.items]
            self.pods = {(i.namespace, i.name): i for i in infos}
            self.cond.notify_all()
        self.synced.set()
        return str(pods.metadata.resource_version)

    def _list_and_watch(self) -> None:
        rv = self._list()
        while not self._stop.is_set():
            self._watch = watch.Watch()
            for ev in self._watch.stream(self.kube.core.list_pod_for_all_namespaces,
                                         field_selector=self._selector(),
                                         resource_version=rv, timeout_seconds=300,
                                         allow_watch_bookmarks=True):
                obj = ev["object"]
                kind = ev["type"]
                if kind == "ERROR":
                    raise RuntimeError(f"watch error: {obj}")
                rv = obj.metadata.resource_version
                if kind == "BOOKMARK":
                    continue
                info = self._info(obj)
                with self.cond:
                    if kind == "DELETED":
                        self.pods.pop((info.namespace, info.name), None)
                        self.deleted_uids.add(info.uid)
                    else:
                        self.pods[(info.namespace, info.name)] = info
                    self.cond.notify_all()
                if self._stop.is_set():
                    return

    def get(self, namespace: str, name: str) -> PodInfo | None:
        with self.cond:
            return self.pods.get((namespace, name))

    def check_current(self, namespace: str, name: str, uid: str) -> None:
        """Raise PodGone if the pod was deleted or replaced (for abandoning waits)."""
        with self.cond:
            self._check_locked(namespace, name, uid)

    def _check_locked(self, namespace: str, name: str, uid: str) -> PodInfo | None:
        pod = self.pods.get((namespace, name))
        if uid and uid in self.deleted_uids:
            raise PodGone(f"pod {namespace}/{name} (UID {uid}) was deleted")
        if pod is not None and uid and pod.uid != uid:
            raise PodGone(f"pod {namespace}/{name} was replaced: its UID is now {pod.uid}, "
                          f"the CNI call is for UID {uid}")
        return pod

    def wait_annotation(self, namespace: str, name: str, uid: str, key: str,
                        timeout: float) -> tuple[PodInfo, str]:
        """Wait for `key` on the pod; (pod, value). TimeoutError / PodGone otherwise."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                pod = self._check_locked(namespace, name, uid)
                if pod is not None and key in pod.annotations:
                    return pod, pod.annotations[key]
                left = deadline - time.monotonic()
                if left <= 0:
                    where = ("the pod has no such annotation" if pod is not None else
                             f"no pod {namespace}/{name} bound to node {self.kube.node_name} "
                             "was seen")
                    raise TimeoutError(
                        f"timed out after {timeout:.0f}s waiting for annotation {key} on pod "
                        f"{namespace}/{name}: {where} (is ovnkube master running?)")
                self.cond.wait(left)
