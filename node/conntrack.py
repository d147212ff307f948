"""Stale UDP conntrack entries of Services, removed when an endpoint goes.

A UDP client that keeps sending from one source port keeps its conntrack
entry alive, and the entry keeps the DNAT to the endpoint it first chose:
when that endpoint goes away the client's datagrams go nowhere for ever.
kube-proxy and ovn-kubernetes' node agent delete such entries. Here OVN's
conntrack is ovs-vswitchd's own (userspace datapath), so the entries are
found with `dpctl/dump-conntrack` (every zone) and removed one by one with
`dpctl/flush-conntrack` by their original tuple, which the userspace
tracker requires.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from ovnkube.informer import Informer
from ovnkube.kubeclient import Obj, slice_service

log = logging.getLogger(__name__)

_ENTRY = re.compile(
    r"^udp,orig=\(src=(?P<src>[^,]+),dst=(?P<dst>[^,]+),sport=(?P<sport>\d+),"
    r"dport=(?P<dport>\d+)\)")
_ZONE = re.compile(r",zone=(\d+)")


@dataclass(frozen=True)
class Entry:
    zone: int
    src: str
    dst: str
    sport: int
    dport: int

    def tuple_arg(self) -> str:
        return (f"ct_nw_src={self.src},ct_nw_dst={self.dst},ct_nw_proto=17,"
                f"ct_tp_src={self.sport},ct_tp_dst={self.dport}")


def parse_dump(text: str) -> list[Entry]:
    """UDP entries of `dpctl/dump-conntrack` output (IPv4)."""
    out = []
    for line in text.splitlines():
        m = _ENTRY.match(line.strip())
        if m and ":" not in m["dst"]:
            z = _ZONE.search(line)
            out.append(Entry(int(z.group(1)) if z else 0, m["src"], m["dst"],
                             int(m["sport"]), int(m["dport"])))
    return out


def used_endpoints(sl: Obj | None) -> set[str]:
    """Addresses a load balancer may send to: ready, or serving while terminating."""
    out: set[str] = set()
    for ep in (sl or {}).get("endpoints") or []:
        cond = ep.get("conditions") or {}
        if cond.get("ready") is not False or cond.get("serving") is True:
            out.update(ep.get("addresses") or [])
    return out


def udp_vips(svc: Obj, node_ips: Iterable[str]) -> set[tuple[str, int]]:
    """(address, port) pairs clients send a Service's UDP traffic to."""
    spec = svc.get("spec") or {}
    ips = [ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip and ip != "None"]
    ips += spec.get("externalIPs") or []
    ips += [i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {})
            .get("ingress") or [] if i.get("ip")]
    out: set[tuple[str, int]] = set()
    for port in spec.get("ports") or []:
        if (port.get("protocol") or "TCP") != "UDP":
            continue
        out |= {(ip, int(port["port"])) for ip in ips}
        if port.get("nodePort"):
            out |= {(ip, int(port["nodePort"])) for ip in node_ips}
    return out


class StaleUdpFlusher:
    """On an EndpointSlice change that drops an endpoint of a Service with
    UDP ports, removes the node's conntrack entries to that Service."""

    def __init__(self, services: Informer, slices: Informer, node_ips: Iterable[str],
                 ovs_rundir: str) -> None:
        self.services = services
        self.node_ips = list(node_ips)
        self.env = {**os.environ, **({"OVS_RUNDIR": ovs_rundir} if ovs_rundir else {})}
        # A vswitchd started with --unixctl=<rundir>/ovs-vswitchd.ctl, else its pidfile's.
        ctl = os.path.join(ovs_rundir, "ovs-vswitchd.ctl") if ovs_rundir else ""
        self.target = ctl if ctl and os.path.exists(ctl) else "ovs-vswitchd"
        self._lock = threading.Lock()
        slices.add_handler(self.on_slice)

    def on_slice(self, key: str, old: Obj | None, new: Obj | None) -> None:
        if old is None or not (used_endpoints(old) - used_endpoints(new)):
            return
        svc_key = slice_service(old)
        svc = self.services.get(svc_key) if svc_key else None
        vips = udp_vips(svc, self.node_ips) if svc else set()
        if vips:
            self.flush(vips)

    def _appctl(self, *args: str) -> str:
        return subprocess.run(["ovs-appctl", "-t", self.target, *args], capture_output=True,
                              text=True, check=True, timeout=30, env=self.env).stdout

    def flush(self, vips: set[tuple[str, int]]) -> int:
        with self._lock:
            try:
                stale = [e for e in parse_dump(self._appctl("dpctl/dump-conntrack"))
                         if (e.dst, e.dport) in vips]
                for e in stale:
                    self._appctl("dpctl/flush-conntrack", f"zone={e.zone}", e.tuple_arg())
            except (subprocess.SubprocessError, OSError) as e:
                log.warning("flushing UDP conntrack entries of %s: %s", sorted(vips),
                            getattr(e, "stderr", "") or e)
                return 0
        if stale:
            log.info("removed %d UDP conntrack entries to %s", len(stale),
                     ", ".join(f"{ip}:{p}" for ip, p in sorted(vips)))
        return len(stale)
