"""The node agent's view of Kubernetes: its Node, and the pods bound to it
(one list+watch shared by every CNI ADD waiting for its pod's annotation)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tenacity import (
    before_sleep_log,
    retry,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)
from urllib3.exceptions import HTTPError

from cni.shim import REPLY_TIMEOUT
from ovnkube.informer import Informer
from ovnkube.kubeclient import Obj, ResourceAPI, api_client, post_event

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

    def post_node_event(self, reason: str, message: str) -> None:
        """A Warning Event on this node (best effort)."""
        post_event(self.core, {"kind": "Node", "metadata": {"name": self.node_name}},
                   reason, message, component="ovnkube-node", host=self.node_name)


#: How long a deleted pod's UID is remembered, so that CNI calls for it fail
#: fast (PodGone) instead of waiting out their timeouts: twice the longest a
#: call can last (the shim gives up after REPLY_TIMEOUT), so every call that
#: started before the deletion, and a late one soon after it, still sees it.
DELETED_UID_RETENTION = 2 * REPLY_TIMEOUT


class PodCache:
    """Pods on this node, kept current by the shared Informer (one list+watch
    in a thread; it relists after any failure: 410 Gone, apiserver restart...)."""

    def __init__(self, kube: Kube, deleted_retention: float = DELETED_UID_RETENTION,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self.pods: dict[tuple[str, str], PodInfo] = {}
        # UID -> when its deletion was seen, oldest first; pruned by age.
        self.deleted_uids: dict[str, float] = {}
        self.deleted_retention = deleted_retention
        self._clock = clock
        self.cond = threading.Condition()
        self.informer = Informer(ResourceAPI(kube.api_client, "/api/v1/pods", "Pod",
                                             field_selector=f"spec.nodeName={kube.node_name}"))
        self.informer.add_handler(self._on_event)
        # Set once the first list has been delivered.
        self.synced = self.informer.synced

    def start(self) -> PodCache:
        self.informer.start()
        return self

    def stop(self) -> None:
        self.informer.stop(join=5)

    @staticmethod
    def _info(pod: Obj) -> PodInfo:
        m = pod["metadata"]
        return PodInfo(m.get("namespace", ""), m["name"], m.get("uid", ""),
                       dict(m.get("annotations") or {}))

    def _on_event(self, key: str, old: Obj | None, new: Obj | None) -> None:
        # A pod missing from a relist is delivered as deleted too: a pod never
        # leaves its node, so it was deleted while the watch was down.
        with self.cond:
            if new is None:
                if old is not None:
                    info = self._info(old)
                    self.pods.pop((info.namespace, info.name), None)
                    now = self._clock()
                    self._forget_deleted_before(now - self.deleted_retention)
                    self.deleted_uids.pop(info.uid, None)  # re-inserted last: oldest first
                    self.deleted_uids[info.uid] = now
            else:
                info = self._info(new)
                self.pods[(info.namespace, info.name)] = info
            self.cond.notify_all()

    def _forget_deleted_before(self, cutoff: float) -> None:
        while self.deleted_uids:
            uid, seen = next(iter(self.deleted_uids.items()))
            if seen >= cutoff:
                return
            del self.deleted_uids[uid]

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
