"""NAT on the management port.

- SNAT: traffic the host forwards into the pod network leaves with the
  port's own address, as ovn-kubernetes' SNAT on ovn-k8s-mp0 does: a pod
  then answers the management port, not a source the pod network would
  route to the gateway router (and SNAT there).
- DNAT: a Service's host-network endpoint on this node is reached through
  the management port's address (the node switch's load balancer uses it:
  the node's own address belongs to the gateway router too); the host hands
  such connections to the node's address, where host-network servers listen
  (a kubelet or an apiserver bound to the node IP). Replies go back out the
  port to be un-DNATed by OVN. The Services' hairpin address
  (HAIRPIN_MASQUERADE_IP: the host reaching its own endpoint through a
  ClusterIP, SNATed by OVN) is routed back through the port.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from ovnkube.annotations import IPInterface

TABLE = "ovn-kubernetes-mgmtport"


def nft_ruleset(port: str, addrs: Sequence[IPInterface],
                node_ips: Sequence[IPInterface] = ()) -> str:
    v4 = [a for a in addrs if a.version == 4]
    node_v4 = [a for a in node_ips if a.version == 4]
    lines = [f"table ip {TABLE} {{}}", f"delete table ip {TABLE}", f"table ip {TABLE} {{"]
    if v4:
        ip = v4[0].ip
        lines += ["  chain postrouting {",
                  "    type nat hook postrouting priority 100; policy accept;",
                  f'    oifname "{port}" ip saddr != {ip} snat to {ip}',
                  "  }"]
        if node_v4:
            lines += ["  chain prerouting {",
                      "    type nat hook prerouting priority -100; policy accept;",
                      f'    iifname "{port}" ip daddr {ip} dnat to {node_v4[0].ip}',
                      "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def install(port: str, addrs: Sequence[IPInterface],
            node_ips: Sequence[IPInterface] = ()) -> None:
    """Write the NAT rules and let this (node) namespace forward IPv4, as
    every Kubernetes node does. RuntimeError names what failed."""
    try:
        subprocess.run(["nft", "-f", "-"], input=nft_ruleset(port, addrs, node_ips), text=True,
                       capture_output=True, check=True, timeout=30)
    except FileNotFoundError as e:
        raise RuntimeError("nft (Debian package nftables) is not installed") from e
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"nft rejected the management port NAT: {e.stderr.strip()}") from e
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
