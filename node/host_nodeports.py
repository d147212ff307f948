"""The node's own host reaching its NodePorts on its own address.

To the kernel, <node IP>:<nodePort> is a local address: the packets never
reach br-ex, so OVN never sees them. As ovn-kubernetes does with its
masquerade subnet, the host DNATs them (nftables, output hook) to the gateway
router's masquerade address (169.254.169.1, same port) and SNATs them to its
own, 169.254.169.2: the router drops packets that claim to come from its own
(the node's) IP. Each node_router load balancer carries a
<masquerade IP>:<nodePort> VIP.

The host's end is an internal port of br-ex of its own (MASQ_PORT), not
br-ex itself: br-ex shares its MAC with the gateway router, and OVN's
external switch hands a frame the router sends to its own MAC straight back
to the router. The router does not own 169.254.169.1 (it only serves it as a
load balancer VIP), so the host knows its MAC as a permanent neighbour; the
router reaches 169.254.169.2 by a static route, and br-ex answers its ARP for
it. br-ex's flows keep the /29 between that port and the router.
"""

from __future__ import annotations

import ipaddress
import logging
import subprocess
from collections.abc import Sequence

from node import netlink
from node.ovs import Ovs
from ovnkube.annotations import IPInterface, mac_from_ip
from ovnkube.config import GR_MASQUERADE_IP, HOST_MASQUERADE_IP, MASQUERADE_SUBNET, NODE_PORTS

log = logging.getLogger(__name__)

TABLE = "ovn-kubernetes"
MASQ_PORT = "ovn-k8s-masq0"


def nft_ruleset(masq_port: str, node_ips: Sequence[IPInterface],
                node_ports: tuple[int, int] = NODE_PORTS) -> str:
    """One nft transaction that replaces our table whole (create it, so the
    delete cannot fail, delete it, write it again)."""
    v4 = sorted({str(i.ip) for i in node_ips if i.version == 4},
                key=lambda a: ipaddress.ip_address(a).packed)
    lines = [f"table ip {TABLE} {{}}", f"delete table ip {TABLE}", f"table ip {TABLE} {{"]
    if v4:
        lo, hi = node_ports
        lines += [
            "  chain nodeport-output {",
            "    type nat hook output priority -100; policy accept;",
            f"    ip daddr {{ {', '.join(v4)} }} meta l4proto {{ tcp, udp, sctp }} "
            f"th dport {lo}-{hi} dnat to {GR_MASQUERADE_IP}",
            "  }",
            "  chain nodeport-postrouting {",
            "    type nat hook postrouting priority 100; policy accept;",
            f'    oifname "{masq_port}" ip daddr {GR_MASQUERADE_IP} snat to {HOST_MASQUERADE_IP}',
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def install(ovs: Ovs, bridge: str, node_ips: Sequence[IPInterface], router_mac: str,
            netdev: bool) -> bool:
    """Add MASQ_PORT to `bridge` with the host's masquerade address and the
    router's as a permanent neighbour, and (re)write the NAT rules. False when
    the node has no IPv4 address (the masquerade path is IPv4-only, like the
    cluster). Raises RuntimeError naming what failed."""
    if not any(i.version == 4 for i in node_ips):
        return False
    ovs.add_port(bridge, MASQ_PORT, iface_type="internal", mac=mac_from_ip(HOST_MASQUERADE_IP))
    netlink.wait_link(MASQ_PORT, 30)
    if netdev:
        netlink.tx_checksum_off(MASQ_PORT)
    netlink.configure_host_iface(
        MASQ_PORT, mac_from_ip(HOST_MASQUERADE_IP),
        [ipaddress.ip_interface(f"{HOST_MASQUERADE_IP}/{MASQUERADE_SUBNET.prefixlen}")],
        None, [], scope=netlink.RT_SCOPE_LINK)
    netlink.set_permanent_neighbour(MASQ_PORT, GR_MASQUERADE_IP, router_mac)
    rules = nft_ruleset(MASQ_PORT, node_ips)
    try:
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, capture_output=True,
                       check=True, timeout=30)
    except FileNotFoundError as e:
        raise RuntimeError("nft (Debian package nftables) is not installed") from e
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"nft rejected the NodePort rules: {e.stderr.strip()}") from e
    log.info("host NodePort NAT: %s:%d-%d -> %s (from %s on %s)",
             ",".join(str(i.ip) for i in node_ips if i.version == 4), *NODE_PORTS,
             GR_MASQUERADE_IP, HOST_MASQUERADE_IP, MASQ_PORT)
    return True
