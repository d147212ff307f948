"""Kubernetes API access shared by master and node: client creation, raw JSON
list/watch (the generated models are slow to build for thousands of objects),
patches and Events."""

from __future__ import annotations

import datetime
import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import urllib3
from kubernetes import client, config

log = logging.getLogger(__name__)

Obj = dict[str, Any]


def api_client(kubeconfig: str = "") -> client.ApiClient:
    if kubeconfig:
        c = config.new_client_from_config(kubeconfig)
    else:
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)
        c = client.ApiClient(cfg)
    # Several worker threads share this client.
    c.configuration.connection_pool_maxsize = 32
    c.rest_client.pool_manager.connection_pool_kw["maxsize"] = 32
    return c


def key_of(obj: Obj) -> str:
    md = obj["metadata"]
    ns = md.get("namespace")
    return f"{ns}/{md['name']}" if ns else str(md["name"])


#: The label that ties an EndpointSlice to its Service.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def slice_service(sl: Obj) -> str | None:
    """The key (<namespace>/<name>) of the Service an EndpointSlice belongs to."""
    name = (sl["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL)
    return f"{sl['metadata']['namespace']}/{name}" if name else None


def split_key(key: str) -> tuple[str, str]:
    ns, _, name = key.rpartition("/")
    return ns, name


def get_annotations(obj: Obj) -> dict[str, str]:
    return obj.get("metadata", {}).get("annotations") or {}


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class ResourceAPI:
    """List and watch one kind as raw JSON dicts through an ApiClient."""

    def __init__(self, api: client.ApiClient, path: str, kind: str,
                 field_selector: str = "") -> None:
        self.api = api
        self.path = path  # e.g. /api/v1/pods, /apis/discovery.k8s.io/v1/endpointslices
        self.kind = kind
        self.field_selector = field_selector  # e.g. metadata.name=X (one object)

    def _call(self, query: list[tuple[str, Any]], timeout: Any = None) -> Any:
        """GET path?query; returns the streaming urllib3 response."""
        if self.field_selector:
            query = [*query, ("fieldSelector", self.field_selector)]
        method, url, headers, _, _ = self.api.param_serialize(
            method="GET", resource_path=self.path, query_params=query,
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        resp = self.api.call_api(method, url, header_params=headers, _request_timeout=timeout)
        if resp.status >= 400:
            body = resp.read()
            raise client.ApiException(status=resp.status, reason=resp.reason, body=body)
        return resp.response

    def list(self, timeout: float = 60) -> tuple[list[Obj], str]:
        items: list[Obj] = []
        cont = ""
        while True:
            q: list[tuple[str, Any]] = [("limit", 500)]
            if cont:
                q.append(("continue", cont))
            data = json.loads(self._call(q, timeout=timeout).data)
            for it in data.get("items", []):
                it.setdefault("kind", self.kind)
                items.append(it)
            cont = data.get("metadata", {}).get("continue", "")
            if not cont:
                return items, str(data["metadata"]["resourceVersion"])

    def watch(self, resource_version: str, timeout_seconds: int = 300
              ) -> Iterator[tuple[str, Obj]]:
        q = [("watch", "true"), ("resourceVersion", resource_version),
             ("allowWatchBookmarks", "true"), ("timeoutSeconds", timeout_seconds)]
        resp = self._call(q, timeout=(10, timeout_seconds + 30))
        try:
            buf = b""
            for chunk in resp.stream(65536, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    obj = ev.get("object") or {}
                    if ev.get("type") == "ERROR":
                        if obj.get("code") == 410:
                            raise WatchExpired(obj.get("message", "410 Gone"))
                        raise client.ApiException(status=obj.get("code"),
                                                  reason=obj.get("message"))
                    obj.setdefault("kind", self.kind)
                    yield ev["type"], obj
        except (TimeoutError, urllib3.exceptions.ReadTimeoutError):
            return  # the server ended a quiet watch: watch again from the same version
        finally:
            resp.release_conn()


def post_event(core: client.CoreV1Api, obj: Obj, reason: str, message: str,
               event_type: str = "Warning", component: str = "ovnkube-master",
               host: str | None = None) -> None:
    """Record a Kubernetes Event on `obj` (kind and apiVersion read from it,
    default a v1 Pod) saying what went wrong
    (best effort: a failure to record it is logged, not raised)."""
    md = obj["metadata"]
    ns = md.get("namespace") or "default"
    now = datetime.datetime.now(datetime.UTC)
    ev = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name=f"{md['name']}.", namespace=ns),
        involved_object=client.V1ObjectReference(
            kind=obj.get("kind", "Pod"), name=md["name"], namespace=md.get("namespace"),
            uid=md.get("uid"), api_version=obj.get("apiVersion", "v1")),
        reason=reason, message=message, type=event_type,
        source=client.V1EventSource(component=component, host=host),
        first_timestamp=now, last_timestamp=now, count=1,
        reporting_component=component, reporting_instance=socket.gethostname())
    try:
        core.create_namespaced_event(ns, ev)
    except (client.ApiException, urllib3.exceptions.HTTPError, OSError) as e:
        log.warning("could not record event %s on %s: %s", reason, md["name"], e)


def request(api: client.ApiClient, method: str, path: str, body: Any = None,
            content_type: str = "application/json", timeout: float = 30) -> Obj:
    """One raw API call returning the JSON body as a dict (no model objects)."""
    headers = {"Accept": "application/json", "Content-Type": content_type}
    m, url, hdrs, data, _ = api.param_serialize(
        method=method, resource_path=path, header_params=headers, body=body,
        auth_settings=["BearerToken"])
    resp = api.call_api(m, url, header_params=hdrs, body=data, _request_timeout=timeout)
    raw = resp.read()
    if resp.status >= 400:
        raise client.ApiException(status=resp.status, reason=resp.reason, body=raw)
    return json.loads(raw) if raw else {}


def patch_annotations(api: client.ApiClient, obj_path: str, values: dict[str, str | None],
                      resource_version: str | None = None) -> Obj:
    """Merge-patch annotations (None removes one) of the object at `obj_path`
    (e.g. /api/v1/namespaces/NS/pods/NAME). With `resource_version` the patch
    only applies to that version of the object (409 Conflict otherwise)."""
    md: dict[str, Any] = {"annotations": values}
    if resource_version:
        md["resourceVersion"] = resource_version
    return request(api, "PATCH", obj_path, {"metadata": md},
                   content_type="application/merge-patch+json")


def pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


def node_path(name: str) -> str:
    return f"/api/v1/nodes/{name}"
