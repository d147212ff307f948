"""Traffic the host forwards into the pod network leaves through the
management port with the port's own address, as ovn-kubernetes' SNAT on
ovn-k8s-mp0 does: a pod then answers the management port, not a source the
pod network would route to the gateway router (and SNAT there). A control-plane
host that routes the pod subnets through its own management port (the
apiserver's pod proxy, webhooks) needs exactly that."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from ovnkube.annotations import IPInterface

TABLE = "ovn-kubernetes-mgmtport"


def nft_ruleset(port: str, addrs: Sequence[IPInterface]) -> str:
    v4 = [a for a in addrs if a.version == 4]
    lines = [f"table ip {TABLE} {{}}", f"delete table ip {TABLE}", f"table ip {TABLE} {{"]
    if v4:
        ip = v4[0].ip
        lines += ["  chain postrouting {",
                  "    type nat hook postrouting priority 100; policy accept;",
                  f'    oifname "{port}" ip saddr != {ip} snat to {ip}',
                  "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def install(port: str, addrs: Sequence[IPInterface]) -> None:
    """Write the SNAT rule and let this (node) namespace forward IPv4, as
    every Kubernetes node does. RuntimeError names what failed."""
    try:
        subprocess.run(["nft", "-f", "-"], input=nft_ruleset(port, addrs), text=True,
                       capture_output=True, check=True, timeout=30)
    except FileNotFoundError as e:
        raise RuntimeError("nft (Debian package nftables) is not installed") from e
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"nft rejected the management port SNAT: {e.stderr.strip()}") from e
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
