"""Pod hostPorts, done by the runtime as CRI-O does it for ovn-kubernetes
(containerd chains the portmap plugin for the same rules): DNAT in the node's
namespace from <hostIP or any local address>:<hostPort> to <pod IP>:<port>,
for traffic arriving at the node and for the node's own. The node agent's
SNAT on ovn-k8s-mp0 brings the replies back (ovn-kubernetes added that rule
for exactly this); 127.0.0.1 as a destination also needs route_localnet on
that port, as portmap sets it on its bridge.

The whole table is rewritten from every ready sandbox's mappings in one nft
transaction, so it never holds a stale or half-made rule.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TABLE = "ovnkube-local-hostports"
MGMT_PORT = "ovn-k8s-mp0"


def ruleset(mappings: Iterable[tuple[str, dict[str, Any]]]) -> str:
    """nft for (pod IPv4, CNI portMappings entry) pairs."""
    rules = []
    for pod_ip, m in mappings:
        if ipaddress.ip_address(pod_ip).version != 4:
            continue
        proto = str(m.get("protocol") or "tcp").lower()
        host_ip = str(m.get("hostIP") or "")
        match = f"ip daddr {host_ip}" if host_ip and host_ip != "0.0.0.0" else \
            "fib daddr type local"
        rules.append(f"    {match} {proto} dport {int(m['hostPort'])} "
                     f"dnat to {pod_ip}:{int(m['containerPort'])}")
    lines = [f"table ip {TABLE} {{}}", f"delete table ip {TABLE}", f"table ip {TABLE} {{"]
    for chain, hook, prio in (("prerouting", "prerouting", -100), ("output", "output", -100)):
        lines += [f"  chain {chain} {{", f"    type nat hook {hook} priority {prio}; "
                  "policy accept;", *rules, "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def sync(mappings: list[tuple[str, dict[str, Any]]]) -> None:
    """Write the rules; RuntimeError names what failed."""
    if mappings:
        p = Path(f"/proc/sys/net/ipv4/conf/{MGMT_PORT}/route_localnet")
        if p.exists():
            p.write_text("1")
    try:
        subprocess.run(["nft", "-f", "-"], input=ruleset(mappings), text=True,
                       capture_output=True, check=True, timeout=30)
    except FileNotFoundError as e:
        raise RuntimeError("nft (Debian package nftables) is not installed") from e
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"nft rejected the hostPort rules: {e.stderr.strip()}") from e
