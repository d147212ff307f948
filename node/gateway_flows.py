"""OpenFlow rules of br-ex in shared gateway mode.

br-ex carries the uplink, the host (LOCAL, with the node IP) and the patch
port to OVN's gateway router, which shares the node's MAC and IP. A plain
learning switch cannot tell which of the two a packet from outside belongs
to. ovn-kubernetes decides by conntrack marks; the userspace datapath here
loses those across OVN's own NAT zones, so we decide statelessly, by port:
- the gateway router SNATs pod traffic to source ports in GR_SNAT_PORTS,
  above the host's ephemeral range, so replies to those ports go to OVN;
- NodePorts go to OVN (the host does not listen on them), except the
  health check node ports the host serves (node/healthcheck.py);
- ICMP and non-IP traffic (ARP) go to both; whoever does not know it drops it;
- IPv4 to the node's own address is the host's; IPv4 to any other address
  (a Service's external or LoadBalancer IP routed to this node) is OVN's;
- the rest (IPv6) is the host's;
- the masquerade /29 (169.254.169.0/29) only links the host to the router.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from collections.abc import Sequence
from ipaddress import IPv4Address

from node.ovs import vsctl
from ovnkube.annotations import IPInterface, mac_from_ip
from ovnkube.config import GR_SNAT_PORTS, HOST_MASQUERADE_IP, MASQUERADE_SUBNET, NODE_PORTS

log = logging.getLogger(__name__)


def port_range_masks(lo: int, hi: int) -> list[str]:
    """Cover [lo, hi] with value/mask pairs, as OpenFlow matches port ranges."""
    out: list[str] = []
    while lo <= hi:
        size = 1
        while lo % (size * 2) == 0 and lo + size * 2 - 1 <= hi:
            size *= 2
        out.append(f"0x{lo:04x}/0x{(0xFFFF & ~(size - 1)):04x}")
        lo += size
    return out


def arp_responder(in_port: int, ip: IPv4Address, mac: str) -> str:
    """Answer ARP requests for `ip` with `mac`, back out `in_port`: the
    gateway router asks for the host's masquerade address from its node IP,
    which the host's kernel, owning that address too, would not answer."""
    mac_hex = "0x" + mac.replace(":", "")
    return (f"table=0,priority=120,in_port={in_port},arp,arp_op=1,arp_tpa={ip},actions="
            "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],"
            f"mod_dl_src:{mac},load:0x2->NXM_OF_ARP_OP[],"
            "move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],"
            f"load:{mac_hex}->NXM_NX_ARP_SHA[],load:0x{int(ip):08x}->NXM_OF_ARP_SPA[],"
            "IN_PORT")


def gateway_flows(uplink: int, patch: int | None, node_ips: Sequence[IPInterface] = (),
                  node_ports: tuple[int, int] = NODE_PORTS,
                  snat_ports: tuple[int, int] = GR_SNAT_PORTS,
                  masq: int | None = None, host_tcp_ports: Sequence[int] = ()) -> list[str]:
    """The whole br-ex flow table, given the uplink's and the patch port's ofports,
    the node's own addresses (what the host answers for), the ofport of the
    host's masquerade port, if any, and the TCP ports of the NodePort range
    the host itself serves."""
    if patch is None:
        # No gateway router bound here yet: the host alone uses the uplink.
        return ["table=0,priority=0,actions=NORMAL"]
    flows = [
        f"table=0,priority=100,in_port={patch},actions=output:{uplink}",
        f"table=0,priority=100,in_port=LOCAL,actions=output:{uplink}",
        f"table=0,priority=50,in_port={uplink},icmp,actions=output:LOCAL,output:{patch}",
        f"table=0,priority=50,in_port={uplink},icmp6,actions=output:LOCAL,output:{patch}",
        # The masquerade /29 joins the host and the gateway router and nothing
        # else: the host's NodePort traffic to its own IP (node/host_nodeports.py).
        f"table=0,priority=105,in_port={patch},arp,arp_spa={MASQUERADE_SUBNET},actions=drop",
        f"table=0,priority=105,in_port={patch},ip,nw_src={MASQUERADE_SUBNET},actions=drop",
        f"table=0,priority=105,in_port={uplink},ip,nw_dst={MASQUERADE_SUBNET},actions=drop",
        f"table=0,priority=105,in_port={uplink},arp,arp_tpa={MASQUERADE_SUBNET},actions=drop",
    ]
    if masq is not None:
        host = HOST_MASQUERADE_IP
        flows += [
            f"table=0,priority=110,in_port={masq},actions=output:{patch}",
            f"table=0,priority=110,in_port={patch},ip,nw_dst={host},actions=output:{masq}",
            arp_responder(patch, host, mac_from_ip(host)),
        ]
    for port in sorted(set(host_tcp_ports)):
        for ip in node_ips:
            if ip.version == 4:
                flows.append(f"table=0,priority=45,in_port={uplink},tcp,nw_dst={ip.ip},"
                             f"tp_dst={port},actions=output:LOCAL")
    for proto in ("tcp", "udp", "sctp"):
        for lo_hi in (snat_ports, node_ports):
            for m in port_range_masks(*lo_hi):
                flows.append(f"table=0,priority=40,in_port={uplink},{proto},tp_dst={m},"
                             f"actions=output:{patch}")
    host_dsts = ["224.0.0.0/4", "255.255.255.255"]
    for ip in node_ips:
        if ip.version == 4:
            host_dsts += [str(ip.ip), str(ip.network.broadcast_address)]
    flows += [f"table=0,priority=20,in_port={uplink},ip,nw_dst={d},actions=output:LOCAL"
              for d in host_dsts]
    flows += [
        # Any other IPv4 destination sent to the node's MAC is an address only
        # OVN serves: a Service's externalIPs or LoadBalancer ingress IPs.
        f"table=0,priority=15,in_port={uplink},ip,actions=output:{patch}",
        f"table=0,priority=20,in_port={uplink},ipv6,actions=output:LOCAL",
        f"table=0,priority=10,in_port={uplink},actions=output:LOCAL,output:{patch}",
        "table=0,priority=0,actions=drop",
    ]
    return flows


class GatewayFlows:
    """Keeps br-ex's flows right as the patch port to OVN comes and goes."""

    def __init__(self, bridge: str, uplink: str, ovs_db: str, rundir: str,
                 node_ips: Sequence[IPInterface] = (), interval: float = 2.0,
                 masq_port: str | None = None) -> None:
        self.bridge = bridge
        self.masq_port = masq_port
        self.node_ips = list(node_ips)
        self.uplink = uplink
        self.ovs_db = ovs_db
        self.env = {**os.environ, **({"OVS_RUNDIR": rundir} if rundir else {})}
        self.interval = interval
        self._stop = threading.Event()
        self._installed: list[str] | None = None
        self._thread: threading.Thread | None = None
        self._host_ports: frozenset[int] = frozenset()
        self._wake = threading.Event()

    def set_host_ports(self, ports: set[int]) -> None:
        """TCP ports of the NodePort range the host serves (health checks)."""
        if frozenset(ports) != self._host_ports:
            self._host_ports = frozenset(ports)
            self._wake.set()

    def _vsctl(self, *args: str) -> str:
        return vsctl(self.ovs_db, *args)

    def _ofport(self, iface: str) -> int | None:
        try:
            v = int(self._vsctl("get", "Interface", iface, "ofport").strip())
        except (subprocess.CalledProcessError, ValueError):
            return None
        return v if v > 0 else None

    def patch_port(self) -> str | None:
        for port in self._vsctl("list-ports", self.bridge).split():
            if port.startswith("patch-") and port.endswith("-to-br-int"):
                return port
        return None

    def _flow_count(self) -> int:
        out = subprocess.run(["ovs-ofctl", "dump-aggregate", self.bridge], capture_output=True,
                             text=True, check=True, env=self.env).stdout
        m = re.search(r"flow_count=(\d+)", out)
        return int(m.group(1)) if m else -1

    def reconcile(self) -> None:
        uplink = self._ofport(self.uplink)
        if uplink is None:
            return
        patch_name = self.patch_port()
        patch = self._ofport(patch_name) if patch_name else None
        masq = self._ofport(self.masq_port) if self.masq_port else None
        flows = gateway_flows(uplink, patch, self.node_ips, masq=masq,
                              host_tcp_ports=sorted(self._host_ports))
        if flows == self._installed and self._flow_count() == len(flows):
            return  # a restarted ovs-vswitchd comes back with no flows at all
        subprocess.run(["ovs-ofctl", "--bundle", "replace-flows", self.bridge, "-"],
                       input="\n".join(flows) + "\n", text=True, capture_output=True,
                       check=True, env=self.env)
        self._installed = flows
        log.info("br-ex flows installed (%d; patch port %s)", len(flows), patch_name)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.reconcile()
            except (subprocess.CalledProcessError, OSError) as e:
                msg = getattr(e, "stderr", "") or str(e)
                log.warning("br-ex flows: %s", msg.strip())

    def start(self) -> GatewayFlows:
        try:
            self.reconcile()
        except (subprocess.CalledProcessError, OSError) as e:
            log.warning("br-ex flows: %s", (getattr(e, "stderr", "") or str(e)).strip())
        self._thread = threading.Thread(target=self._run, name="gateway-flows", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
