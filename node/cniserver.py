"""The node's CNI handler: what each CNI call forwarded by the shim does
(`node.cni_request` parses the call, `node.cni_http` serves it on the socket).

ADD waits for the master's pod annotation, plumbs a veth into the pod and the
other end into br-int, waits for ovn-controller's `ovn-installed` and answers
with a CNI result. DEL, CHECK, GC, STATUS and VERSION follow CNI spec 1.1.0.
Failures come back as CNI errors (HTTP 4xx/5xx with {code, msg, details}).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cni.shim import (
    ERR_BAD_ANNOTATION,
    ERR_CHECK_FAILED,
    ERR_INVALID_CONFIG,
    ERR_INVALID_ENV,
    ERR_NOT_AVAILABLE,
    ERR_OVN_INSTALLED_TIMEOUT,
    ERR_PLUMBING,
    ERR_TRY_AGAIN,
    ERR_UNKNOWN_CONTAINER,
    CniError,
    version_result,
)
from node import netlink
from node.cni_request import CniRequest, Timings, build_result, short
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


def host_ifname(container_id: str) -> str:
    """The host end of the pod's veth, named from the container id as
    ovn-kubernetes does."""
    return container_id[:15]


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
                raise CniError(ERR_INVALID_CONFIG, f"CHECK: prevResult {key} {short(items)} is "
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
