"""The node's CNI server: HTTP on a root-only unix socket, one request per
CNI call forwarded by the shim (`{"env": {CNI_*}, "config": "<raw JSON>"}`).

ADD waits for the master's pod annotation, plumbs a veth into the pod and the
other end into br-int, waits for ovn-controller's `ovn-installed` and answers
with a CNI result. DEL, CHECK, GC, STATUS and VERSION follow CNI spec 1.1.0.
Failures come back as CNI errors (HTTP 4xx/5xx with {code, msg, details}).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from cni.shim import (
    ERR_BAD_ANNOTATION,
    ERR_CHECK_FAILED,
    ERR_DECODE,
    ERR_INTERNAL,
    ERR_INVALID_CONFIG,
    ERR_INVALID_ENV,
    ERR_LIMITED_CONNECTIVITY,
    ERR_NOT_AVAILABLE,
    ERR_OVN_INSTALLED_TIMEOUT,
    ERR_PLUMBING,
    ERR_TRY_AGAIN,
    ERR_UNKNOWN_CONTAINER,
    ERR_UNSUPPORTED_FIELD,
    MAX_CONFIG_BYTES,
    CniError,
    check_env,
    parse_cni_args,
    parse_config,
    version_result,
)
from node import netlink
from node.kube import Kube, PodCache, PodGone
from node.ovs import (
    ATTACHED_MAC,
    CNI_IFNAME,
    CNI_NETNS,
    IFACE_ID,
    IFACE_ID_VER,
    IP_ADDRESSES,
    OVN_INSTALLED,
    SANDBOX,
    Ovs,
)
from ovnkube import names
from ovnkube.annotations import POD_NETWORKS, AnnotationError, PodNetwork

log = logging.getLogger(__name__)

BRIDGE = "br-int"


@dataclass
class CniRequest:
    command: str
    env: dict[str, str]
    config: dict[str, Any]
    args: dict[str, str]

    @property
    def container_id(self) -> str:
        return self.env.get("CNI_CONTAINERID", "")

    @property
    def ifname(self) -> str:
        return self.env.get("CNI_IFNAME", "")

    @property
    def netns(self) -> str:
        return self.env.get("CNI_NETNS", "")

    @property
    def pod_namespace(self) -> str:
        return self.args.get("K8S_POD_NAMESPACE", "")

    @property
    def pod_name(self) -> str:
        return self.args.get("K8S_POD_NAME", "")

    @property
    def pod_uid(self) -> str:
        return self.args.get("K8S_POD_UID", "")

    @property
    def version(self) -> str:
        return str(self.config.get("cniVersion", "1.1.0"))

    def __str__(self) -> str:
        pod = f" {self.pod_namespace}/{self.pod_name}" if self.pod_name else ""
        return f"{self.command} {self.container_id[:12]}{pod}".strip()


# The largest request body: the config plus the CNI_* environment.
MAX_REQUEST_BYTES = MAX_CONFIG_BYTES + (64 << 10)
REQUEST_FIELDS = ("env", "config")


def _short(value: object, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def parse_request(body: bytes) -> CniRequest:
    """The shim's request, checked with the same rules the shim applies."""
    if len(body) > MAX_REQUEST_BYTES:
        raise CniError(ERR_INVALID_CONFIG, f"request to the CNI server is {len(body)} bytes, "
                       f"more than {MAX_REQUEST_BYTES}")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise CniError(ERR_DECODE, f"bad request to the CNI server: not JSON ({e})") from None
    if not isinstance(data, dict):
        raise CniError(ERR_DECODE, f"bad request to the CNI server: {_short(data)} is not an "
                       "object with env and config")
    unknown = sorted(k for k in data if k not in REQUEST_FIELDS)
    if unknown:
        raise CniError(ERR_UNSUPPORTED_FIELD, "bad request to the CNI server: unsupported "
                       "field " + ", ".join(f"{k!r}={_short(data[k])}" for k in unknown[:5]))
    env, raw = data.get("env"), data.get("config")
    if not isinstance(env, dict):
        raise CniError(ERR_DECODE, f"bad request to the CNI server: env {_short(env)} is not "
                       "an object")
    if not isinstance(raw, str):
        raise CniError(ERR_DECODE, f"bad request to the CNI server: config {_short(raw)} is "
                       "not a string")
    bad = [k for k, v in env.items() if not isinstance(v, str)]
    if bad:
        raise CniError(ERR_INVALID_ENV, f"bad request to the CNI server: env {bad[0]!r}="
                       f"{_short(env[bad[0]])} is not a string")
    command = check_env(env)
    if command == "VERSION":
        return CniRequest(command, env, {"cniVersion": "1.1.0"}, {})
    conf = parse_config(raw)
    return CniRequest(command, env, conf, parse_cni_args(env.get("CNI_ARGS", "")))


def host_ifname(container_id: str) -> str:
    """The host end of the pod's veth, named from the container id as
    ovn-kubernetes does."""
    return container_id[:15]


def build_result(req: CniRequest, net: PodNetwork, iface: netlink.PodIface) -> dict[str, Any]:
    ips: list[dict[str, Any]] = []
    for a in net.ip_addresses:
        entry: dict[str, Any] = {"address": str(a), "interface": 1}
        gw = next((g for g in net.gateway_ips if g.version == a.version), None)
        if gw is not None:
            entry["gateway"] = str(gw)
        if req.version == "0.4.0":
            entry["version"] = str(a.version)
        ips.append(entry)
    routes = [{"dst": "0.0.0.0/0" if g.version == 4 else "::/0", "gw": str(g)}
              for g in net.gateway_ips]
    routes += [{"dst": str(r.dest), "gw": str(r.next_hop)} for r in net.routes]
    return {
        "cniVersion": req.version,
        "interfaces": [
            {"name": iface.host_ifname, "mac": iface.host_mac},
            {"name": req.ifname, "mac": iface.pod_mac, "sandbox": req.netns},
        ],
        "ips": ips,
        "routes": routes,
        "dns": {},
    }


@dataclass
class Timings:
    annotation: float = 0.0
    plumbing: float = 0.0
    ovn_installed: float = 0.0

    def header(self) -> str:
        return (f"annotation={self.annotation * 1000:.1f}ms plumbing={self.plumbing * 1000:.1f}ms "
                f"ovn-installed={self.ovn_installed * 1000:.1f}ms")


@dataclass
class _ContainerLock:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0  # calls holding or waiting for `lock`


@dataclass
class CniHandler:
    """The verbs, independent of HTTP."""

    ovs: Ovs
    pods: PodCache
    kube: Kube | None
    mtu: int
    netdev: bool
    annotation_timeout: float
    ovn_installed_timeout: float
    not_ready: Callable[[], str]  # "" when ready to serve ADD, else why not
    # Containers with a call in flight only: an entry goes with its last call.
    _locks: dict[str, _ContainerLock] = field(default_factory=dict)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def _container_lock(self, cid: str) -> Iterator[None]:
        """Serialise the calls for one container. While any call holds or waits
        for the entry it stays, so every concurrent call gets the same lock."""
        with self._locks_guard:
            entry = self._locks.setdefault(cid, _ContainerLock())
            entry.users += 1
        try:
            with entry.lock:
                yield
        finally:
            with self._locks_guard:
                entry.users -= 1
                if not entry.users:
                    del self._locks[cid]

    def handle(self, req: CniRequest, timings: Timings) -> dict[str, Any] | None:
        if req.command == "VERSION":
            return version_result(req.version)
        if req.command == "STATUS":
            why = self.not_ready()
            if why:
                raise CniError(ERR_NOT_AVAILABLE, f"not ready to add pods: {why}")
            return None
        if req.command == "GC":
            self.gc(req)
            return None
        with self._container_lock(req.container_id):
            if req.command == "ADD":
                return self.add(req, timings)
            if req.command == "DEL":
                self.delete(req)
                return None
            self.check(req)
            return None

    # --- ADD --------------------------------------------------------------

    def add(self, req: CniRequest, timings: Timings) -> dict[str, Any]:
        why = self.not_ready()
        if why:
            raise CniError(ERR_TRY_AGAIN, f"ovnkube node is not ready to add pods yet: {why}")
        self._check_netns(req)
        port = host_ifname(req.container_id)
        why = self._not_a_pod_name(port)
        if why:
            raise CniError(ERR_INVALID_ENV, f"CNI_CONTAINERID {req.container_id!r} would name the "
                           f"host end of its veth {port!r}, but {why}")
        ns, name, uid = req.pod_namespace, req.pod_name, req.pod_uid
        t0 = time.monotonic()
        try:
            pod, value = self.pods.wait_annotation(ns, name, uid, POD_NETWORKS,
                                                   self.annotation_timeout)
        except TimeoutError as e:
            if self.kube is not None:
                self.kube.post_pod_event(ns, name, uid, "ErrorAddingPod", str(e))
            raise CniError(ERR_TRY_AGAIN, str(e)) from None
        except PodGone as e:
            raise CniError(ERR_UNKNOWN_CONTAINER, str(e)) from None
        timings.annotation = time.monotonic() - t0
        try:
            net = PodNetwork.parse(value)
        except AnnotationError as e:
            if self.kube is not None:
                self.kube.post_pod_event(ns, name, uid, "ErrorAddingPod", str(e))
            raise CniError(ERR_BAD_ANNOTATION, f"pod {ns}/{name}: {e}") from None
        uid = uid or pod.uid
        t1 = time.monotonic()
        spec = netlink.PodIfaceSpec(
            netns=req.netns, ifname=req.ifname, mac=net.mac_address,
            addresses=net.ip_addresses, gateways=net.gateway_ips,
            routes=tuple((r.dest, r.next_hop) for r in net.routes), mtu=self.mtu,
            tx_csum_off=self.netdev)
        try:
            iface = netlink.create_pod_veth(port, spec)
        except netlink.NetnsGone as e:
            raise CniError(ERR_UNKNOWN_CONTAINER, str(e)) from None
        except Exception as e:
            log.exception("%s: plumbing failed", req)
            raise CniError(ERR_PLUMBING, f"pod {ns}/{name}: setting up {req.ifname} in "
                           f"{req.netns} failed: {e}") from None
        ids = {IFACE_ID: names.pod_port(ns, name), IFACE_ID_VER: uid, ATTACHED_MAC: net.mac_address,
               SANDBOX: req.container_id, IP_ADDRESSES: ",".join(str(a) for a in
                                                                 net.ip_addresses),
               CNI_IFNAME: req.ifname, CNI_NETNS: req.netns}
        try:
            stale = self.ovs.add_pod_port(BRIDGE, port, ids)
            if stale:
                log.info("%s: removed ports of older sandboxes: %s", req, ", ".join(stale))
            timings.plumbing = time.monotonic() - t1
            t2 = time.monotonic()
            self.ovs.wait_ovn_installed(
                port, self.ovn_installed_timeout,
                abandon=lambda: self.pods.check_current(ns, name, uid))
            timings.ovn_installed = time.monotonic() - t2
        except BaseException as e:
            self._undo(port, req)
            if isinstance(e, PodGone):
                raise CniError(ERR_UNKNOWN_CONTAINER, str(e)) from None
            if isinstance(e, TimeoutError):
                raise CniError(ERR_OVN_INSTALLED_TIMEOUT, f"pod {ns}/{name}: {e}") from None
            if isinstance(e, CniError):
                raise
            log.exception("%s: adding the OVS port failed", req)
            raise CniError(ERR_PLUMBING, f"pod {ns}/{name}: adding OVS port {port} to "
                           f"{BRIDGE} failed: {e}") from None
        log.info("%s: added %s (%s) on %s: %s", req, net.ip_addresses[0], net.mac_address,
                 port, timings.header())
        return build_result(req, net, iface)

    @staticmethod
    def _check_netns(req: CniRequest) -> None:
        """CNI_NETNS must be a network namespace and not the node's own."""
        why = netlink.netns_problem(req.netns)
        if why == "does not exist":
            raise CniError(ERR_UNKNOWN_CONTAINER, f"CNI_NETNS {req.netns!r} does not exist")
        if why:
            raise CniError(ERR_INVALID_ENV, f"CNI_NETNS {req.netns!r} {why}")

    def _not_a_pod_name(self, port: str) -> str:
        """Why `port` names something of the node's rather than a pod's veth
        ("" when it is free or a pod's): an OVS interface without a sandbox
        (br-ex, the uplink, a tunnel, the management port) or a host link that
        is not a bare NOARP veth. ADD would replace it, DEL delete it."""
        ids = self.ovs.iface_external_ids(port)
        if ids is not None and not ids.get(SANDBOX):
            return f"OVS interface {port!r} is the node's, not a pod's"
        facts = netlink.link_facts(port)
        if facts is not None and not netlink.is_pod_veth(facts):
            return (f"host interface {port!r} is the node's ({facts.kind or 'device'} with "
                    f"{facts.addresses} addresses), not a pod's veth")
        return ""

    def _undo(self, port: str, req: CniRequest) -> None:
        """Remove whatever a failed ADD made, leaving nothing half-done."""
        with contextlib.suppress(Exception):
            self.ovs.del_port(port)
        with contextlib.suppress(Exception):
            netlink.delete_link(port)

    # --- DEL --------------------------------------------------------------

    def delete(self, req: CniRequest) -> None:
        """Idempotent: missing ports, veths or netns are fine."""
        netns_why = netlink.netns_problem(req.netns) if req.netns else ""
        if netns_why == "is the node's own network namespace":
            # DEL removes CNI_IFNAME there: that would be one of the node's.
            raise CniError(ERR_INVALID_ENV, f"CNI_NETNS {req.netns!r} {netns_why}")
        if not self.ovs.connected():
            raise CniError(ERR_TRY_AGAIN, "not connected to the local OVS database")
        removed = []
        for p in self.ovs.ports_of_sandbox(req.container_id, req.ifname):
            self.ovs.del_port(p.name)
            removed.append(p.name)
        port = host_ifname(req.container_id)
        why = self._not_a_pod_name(port)
        if why:
            log.warning("%s: not deleting %s: %s", req, port, why)
        elif netlink.delete_link(port):
            removed.append(f"veth {port}")
        if req.netns and not netns_why and netlink.delete_pod_iface(req.netns, req.ifname):
            removed.append(f"{req.ifname} in {req.netns}")
        log.info("%s: deleted %s", req, ", ".join(removed) or "nothing (already gone)")

    # --- CHECK ------------------------------------------------------------

    def check(self, req: CniRequest) -> None:
        why = self.not_ready()
        if why:
            raise CniError(ERR_TRY_AGAIN, f"ovnkube node is not ready: {why}")
        prev = req.config.get("prevResult")
        if not isinstance(prev, dict):
            raise CniError(ERR_INVALID_CONFIG, "CHECK: network config has no prevResult")
        for key in ("interfaces", "ips", "routes"):
            items = prev.get(key) or []
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise CniError(ERR_INVALID_CONFIG, f"CHECK: prevResult {key} {_short(items)} is "
                               "not a list of objects")
        ifaces = prev.get("interfaces") or []
        idx = next((i for i, itf in enumerate(ifaces) if isinstance(itf, dict)
                    and itf.get("name") == req.ifname and itf.get("sandbox")), None)
        if idx is None:
            raise CniError(ERR_INVALID_CONFIG, f"CHECK: prevResult has no interface "
                           f"{req.ifname!r} with a sandbox")
        want = ifaces[idx]
        self._check_netns(req)
        try:
            state = netlink.read_pod_iface(req.netns, req.ifname)
        except netlink.NetnsGone as e:
            raise CniError(ERR_UNKNOWN_CONTAINER, str(e)) from None
        problems: list[str] = []
        if state is None:
            raise CniError(ERR_CHECK_FAILED, f"CHECK: interface {req.ifname!r} is missing in "
                           f"{req.netns}")
        if want.get("mac") and str(want["mac"]).lower() != state.mac.lower():
            problems.append(f"MAC is {state.mac}, prevResult says {want['mac']}")
        for ip in prev.get("ips") or []:
            if ip.get("interface", idx) == idx and ip.get("address") not in state.addresses:
                problems.append(f"address {ip.get('address')} missing (has "
                                f"{', '.join(sorted(state.addresses)) or 'none'})")
        for r in prev.get("routes") or []:
            if r.get("gw") and (r.get("dst"), r.get("gw")) not in state.routes:
                problems.append(f"route {r.get('dst')} via {r.get('gw')} missing")
        ports = self.ovs.ports_of_sandbox(req.container_id, req.ifname)
        iface_id = names.pod_port(req.pod_namespace, req.pod_name)
        if not ports:
            problems.append(f"no OVS port on {BRIDGE} for sandbox {req.container_id}")
        for p in ports:
            if p.external_ids.get(IFACE_ID) != iface_id:
                problems.append(f"OVS port {p.name} has iface-id "
                                f"{p.external_ids.get(IFACE_ID)!r}, want {iface_id!r}")
            if p.external_ids.get(OVN_INSTALLED) != "true":
                problems.append(f"OVS port {p.name} is not ovn-installed")
        if problems:
            raise CniError(ERR_CHECK_FAILED, f"CHECK {req.pod_namespace}/{req.pod_name}: "
                           + "; ".join(problems))

    # --- GC ---------------------------------------------------------------

    def gc(self, req: CniRequest) -> None:
        valid_raw = req.config.get("cni.dev/valid-attachments", [])
        if not isinstance(valid_raw, list) or not all(
                isinstance(v, dict) and isinstance(v.get("containerID"), str)
                for v in valid_raw):
            raise CniError(ERR_INVALID_CONFIG, f"GC: cni.dev/valid-attachments {valid_raw!r} "
                           "must be a list of {containerID, ifname} objects")
        if not self.ovs.connected():
            raise CniError(ERR_TRY_AGAIN, "not connected to the local OVS database")
        valid = {(v["containerID"], v.get("ifname", "")) for v in valid_raw}
        valid_ids = {v["containerID"] for v in valid_raw}
        for p in self.ovs.pod_ports():
            ifname = p.external_ids.get(CNI_IFNAME, "")
            if (p.sandbox, ifname) in valid or (not ifname and p.sandbox in valid_ids):
                continue
            with self._container_lock(p.sandbox):
                log.info("GC: removing port %s of sandbox %s (%s)", p.name, p.sandbox,
                         p.external_ids.get(IFACE_ID))
                self.ovs.del_port(p.name)
                netlink.delete_link(p.name)
                netns = p.external_ids.get(CNI_NETNS, "")
                if netns and ifname:
                    netlink.delete_pod_iface(netns, ifname)


# --- HTTP ---------------------------------------------------------------------

# The HTTP status of a CNI error (the shim relays the CNI error either way):
# the spec's codes 1-7 (below 10) mean the caller's request is wrong; try again
# and not available mean come back later; the rest are ours.
_FIRST_NON_CALLER_CODE = 10
_UNAVAILABLE_CODES = (ERR_TRY_AGAIN, ERR_NOT_AVAILABLE, ERR_LIMITED_CONNECTIVITY)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 256
    handler: CniHandler


# A too large request is read and dropped up to this much, then the connection closed.
_MAX_DRAINED_BYTES = 64 << 20


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    # A client that stops sending (or never sends the body it announced) loses
    # its connection after this long instead of holding a thread forever.
    timeout = 30.0

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)

    def _send(self, status: int, body: dict[str, Any] | None, headers: dict[str, str]) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        why = self.server.handler.not_ready()
        if self.path == "/alive":
            self._send(200, {"alive": True}, {})
        elif self.path == "/ready":
            self._send(503 if why else 200, {"ready": not why, "reason": why}, {})
        else:
            self._send(404, {"error": f"no such path {self.path!r}"}, {})

    def _read_body(self) -> bytes:
        """The request body, at most MAX_REQUEST_BYTES of it in memory; a
        CniError for a bad or too large Content-Length (a too large body is
        read and dropped, up to a bound, so the client reads the answer)."""
        raw = self.headers.get("Content-Length") or "0"
        try:
            length = int(raw)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise CniError(ERR_DECODE, f"bad request to the CNI server: Content-Length "
                           f"{_short(raw)} is not a byte count") from None
        if length > MAX_REQUEST_BYTES:
            self.close_connection = True
            left = min(length, _MAX_DRAINED_BYTES)
            while left > 0 and (chunk := self.rfile.read(min(left, 1 << 16))):
                left -= len(chunk)
            raise CniError(ERR_INVALID_CONFIG, f"request to the CNI server is {length} bytes, "
                           f"more than {MAX_REQUEST_BYTES}")
        body = self.rfile.read(length)
        if len(body) < length:
            raise CniError(ERR_DECODE, f"bad request to the CNI server: got {len(body)} of "
                           f"{length} bytes")
        return body

    def do_POST(self) -> None:
        timings = Timings()
        req: CniRequest | None = None
        try:
            req = parse_request(self._read_body())
            result = self.server.handler.handle(req, timings)
            self._send(200, result, {"X-CNI-Timings": timings.header()})
        except CniError as e:
            log.warning("%s: CNI error %d: %s", req or "request", e.code, e.msg)
            status = (400 if e.code < _FIRST_NON_CALLER_CODE else
                      503 if e.code in _UNAVAILABLE_CODES else 500)
            self._send(status, e.to_json(req.version if req else "1.1.0"), {})
        except Exception as e:
            log.exception("%s: internal error", req or "request")
            err = CniError(ERR_INTERNAL, f"ovnkube node internal error: {e}")
            self._send(500, err.to_json(req.version if req else "1.1.0"), {})


class CniServer:
    """The HTTP server on the unix socket, served from a thread."""

    def __init__(self, path: Path, handler: CniHandler) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old = os.umask(0o077)
        try:
            self.server = _Server(str(path), _RequestHandler)
        finally:
            os.umask(old)
        path.chmod(0o600)
        self.server.handler = handler
        self.thread = threading.Thread(target=self.server.serve_forever, name="cni-server",
                                       kwargs={"poll_interval": 0.2}, daemon=True)

    def start(self) -> CniServer:
        self.thread.start()
        log.info("CNI server listening on %s", self.path)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
