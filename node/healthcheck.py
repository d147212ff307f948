"""Health check node ports of externalTrafficPolicy=Local Services, served
as kube-proxy serves them (ovn-kubernetes' node agent does too).

A load balancer in front of the nodes asks each node's
`spec.healthCheckNodePort`: 200 while the node has a ready endpoint of the
Service, 503 when it has none (only terminating ones count as none), with
kube-proxy's JSON body and headers. One HTTP server per port, on every
address of the node; the ports are handed to br-ex's flows (the NodePort
range otherwise goes to OVN).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ovnkube.informer import Informer
from ovnkube.kubeclient import Obj, key_of, slice_service

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    namespace: str
    name: str
    port: int


def wanted_check(svc: Obj) -> Check | None:
    """The health check a Service asks of every node, if any."""
    spec = svc.get("spec") or {}
    port = spec.get("healthCheckNodePort")
    if not port or spec.get("externalTrafficPolicy") != "Local":
        return None
    md = svc["metadata"]
    return Check(md["namespace"], md["name"], int(port))


def local_ready_endpoints(slices: Iterable[Obj], node: str) -> int:
    """Ready endpoints on `node` (kube-proxy's localEndpoints): a terminating
    endpoint is not ready, unless its Service publishes not-ready addresses."""
    seen: set[str] = set()
    for sl in slices:
        for ep in sl.get("endpoints") or []:
            if ep.get("nodeName") != node:
                continue
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            seen.update(ep.get("addresses") or [])
    return len(seen)


def response(check: Check, count: int) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body, byte for byte kube-proxy's."""
    body = ("{\n"
            '\t"service": {\n'
            f'\t\t"namespace": "{check.namespace}",\n'
            f'\t\t"name": "{check.name}"\n'
            "\t},\n"
            f'\t"localEndpoints": {count},\n'
            '\t"serviceProxyHealthy": true\n'
            "}")
    headers = {"Content-Type": "application/json", "X-Content-Type-Options": "nosniff",
               "X-Load-Balancing-Endpoint-Weight": str(count)}
    return (200 if count > 0 else 503), headers, body.encode()


class _Server:
    def __init__(self, check: Check, count: int) -> None:
        self.check, self.count = check, count
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, headers, body = response(owner.check, owner.count)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("0.0.0.0", check.port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       name=f"healthcheck-{check.port}", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class HealthChecks:
    """Watches Services and EndpointSlices; runs one server per health check
    node port; tells `on_ports` the set of ports whenever it changes."""

    def __init__(self, services: Informer, slices: Informer, node: str,
                 on_ports: Callable[[set[int]], None]) -> None:
        self.node = node
        self.on_ports = on_ports
        self.services, self.slices = services, slices
        self._servers: dict[int, _Server] = {}
        self._lock = threading.Lock()
        services.add_handler(self._on_service)
        slices.add_handler(self._on_slice)

    # Only events of Services with a health check need a sync: the rest of a
    # cluster's Service churn passes by.
    def _on_service(self, key: str, old: Obj | None, new: Obj | None) -> None:
        if any(wanted_check(o) for o in (old, new) if o):
            self.sync()

    def _on_slice(self, key: str, old: Obj | None, new: Obj | None) -> None:
        keys = {k for k in (slice_service(o) for o in (old, new) if o) if k}
        if any(wanted_check(svc) for svc in map(self.services.get, keys) if svc):
            self.sync()

    def stop(self) -> None:
        with self._lock:
            for s in self._servers.values():
                s.close()
            self._servers.clear()

    def desired(self) -> dict[int, tuple[Check, int]]:
        by_service: dict[str, list[Obj]] = {}
        for sl in self.slices.items():
            svc_key = slice_service(sl)
            if svc_key:
                by_service.setdefault(svc_key, []).append(sl)
        out: dict[int, tuple[Check, int]] = {}
        for svc in self.services.items():
            check = wanted_check(svc)
            if check is not None:
                out[check.port] = (check, local_ready_endpoints(
                    by_service.get(key_of(svc), []), self.node))
        return out

    def sync(self) -> None:
        want = self.desired()
        with self._lock:
            for port in list(self._servers):
                if port not in want or self._servers[port].check != want[port][0]:
                    self._servers.pop(port).close()
            for port, (check, count) in want.items():
                srv = self._servers.get(port)
                if srv is not None:
                    srv.count = count
                    continue
                try:
                    self._servers[port] = _Server(check, count)
                    log.info("health check for %s/%s on port %d", check.namespace,
                             check.name, port)
                except OSError as e:
                    log.error("health check port %d of %s/%s: %s (next event retries)",
                              port, check.namespace, check.name, e)
            ports = set(self._servers)
        self.on_ports(ports)
