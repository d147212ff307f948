"""The annotations master and node exchange through the Kubernetes API, in the
formats ovn-kubernetes uses, with parsers that name the bad value."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

NODE_SUBNETS = "k8s.ovn.org/node-subnets"
NODE_CHASSIS_ID = "k8s.ovn.org/node-chassis-id"
L3_GATEWAY_CONFIG = "k8s.ovn.org/l3-gateway-config"
NODE_PRIMARY_IFADDR = "k8s.ovn.org/node-primary-ifaddr"
NODE_MGMT_PORT_MAC = "k8s.ovn.org/node-mgmt-port-mac-address"
NODE_GR_LRP_IFADDR = "k8s.ovn.org/node-gateway-router-lrp-ifaddr"
POD_NETWORKS = "k8s.ovn.org/pod-networks"
DEFAULT_NETWORK = "default"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AnnotationError(ValueError):
    """An annotation is missing or malformed; the message names key and value."""

    def __init__(self, key: str, value: object, why: str) -> None:
        super().__init__(f"annotation {key}={value!r}: {why}")
        self.key = key
        self.value = value


def _load(key: str, value: str) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError) as e:
        raise AnnotationError(key, value, f"not JSON ({e})") from None


def mac_from_ip(ip: IPAddress | str) -> str:
    """ovn-kubernetes' MAC for an IPv4 address: 0a:58 + the four address bytes."""
    addr = ipaddress.ip_address(ip)
    tail = addr.packed if addr.version == 4 else addr.packed[-4:]
    return "0a:58:" + ":".join(f"{b:02x}" for b in tail)


# --- node ------------------------------------------------------------------

def format_node_subnets(subnets: list[IPNetwork]) -> str:
    value: str | list[str] = (str(subnets[0]) if len(subnets) == 1
                              else [str(s) for s in subnets])
    return json.dumps({DEFAULT_NETWORK: value})


def format_node_gr_lrp_ifaddr(addr: IPInterface) -> str:
    """The gateway router's join address (IPv4 only, as in single-stack ovn-kubernetes)."""
    return json.dumps({"ipv4": str(addr)})


def parse_node_gr_lrp_ifaddr(value: str) -> IPInterface:
    data = _load(NODE_GR_LRP_IFADDR, value)
    try:
        return ipaddress.ip_interface(data["ipv4"])
    except (ValueError, KeyError, TypeError):
        raise AnnotationError(NODE_GR_LRP_IFADDR, value, 'want {"ipv4": "<ip>/<len>"}') from None


def parse_node_subnets(value: str) -> list[IPNetwork]:
    data = _load(NODE_SUBNETS, value)
    if not isinstance(data, dict) or DEFAULT_NETWORK not in data:
        raise AnnotationError(NODE_SUBNETS, value, 'want {"default": "<cidr>"}')
    raw = data[DEFAULT_NETWORK]
    items = raw if isinstance(raw, list) else [raw]
    try:
        return [ipaddress.ip_network(s, strict=True) for s in items]
    except (TypeError, ValueError) as e:
        raise AnnotationError(NODE_SUBNETS, value, f"bad subnet ({e})") from None


@dataclass(frozen=True)
class L3GatewayConfig:
    """What the node agent tells the master about its gateway (shared mode)."""

    mode: str
    interface_id: str
    mac_address: str
    ip_addresses: tuple[IPInterface, ...]
    next_hops: tuple[IPAddress, ...]
    bridge_id: str = "br-ex"
    node_port_enable: bool = True
    vlan_id: int = 0

    def to_annotation(self) -> str:
        return json.dumps({DEFAULT_NETWORK: {
            "mode": self.mode, "bridge-id": self.bridge_id, "interface-id": self.interface_id,
            "mac-address": self.mac_address,
            "ip-addresses": [str(i) for i in self.ip_addresses],
            "ip-address": str(self.ip_addresses[0]) if self.ip_addresses else "",
            "next-hops": [str(n) for n in self.next_hops],
            "next-hop": str(self.next_hops[0]) if self.next_hops else "",
            "node-port-enable": "true" if self.node_port_enable else "false",
            "vlan-id": str(self.vlan_id),
        }})

    @classmethod
    def parse(cls, value: str) -> L3GatewayConfig:
        data = _load(L3_GATEWAY_CONFIG, value)
        try:
            d = data[DEFAULT_NETWORK]
            ips = d.get("ip-addresses") or ([d["ip-address"]] if d.get("ip-address") else [])
            hops = d.get("next-hops") or ([d["next-hop"]] if d.get("next-hop") else [])
            return cls(
                mode=d["mode"], interface_id=d["interface-id"], mac_address=d["mac-address"],
                ip_addresses=tuple(ipaddress.ip_interface(i) for i in ips),
                next_hops=tuple(ipaddress.ip_address(h) for h in hops),
                bridge_id=d.get("bridge-id", "br-ex"),
                node_port_enable=str(d.get("node-port-enable", "true")) == "true",
                vlan_id=int(d.get("vlan-id", 0) or 0),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise AnnotationError(L3_GATEWAY_CONFIG, value, f"bad or missing field {e}") from None


# --- pod -------------------------------------------------------------------

@dataclass(frozen=True)
class Route:
    dest: IPNetwork
    next_hop: IPAddress


@dataclass(frozen=True)
class PodNetwork:
    """One pod's attachment to the default network."""

    ip_addresses: tuple[IPInterface, ...]
    mac_address: str
    gateway_ips: tuple[IPAddress, ...]
    routes: tuple[Route, ...] = field(default=())

    def to_annotation(self) -> str:
        return json.dumps({DEFAULT_NETWORK: {
            "ip_addresses": [str(i) for i in self.ip_addresses],
            "mac_address": self.mac_address,
            "gateway_ips": [str(g) for g in self.gateway_ips],
            "routes": [{"dest": str(r.dest), "nextHop": str(r.next_hop)} for r in self.routes],
            # Single-stack fields older ovn-kubernetes readers still use.
            "ip_address": str(self.ip_addresses[0]),
            "gateway_ip": str(self.gateway_ips[0]) if self.gateway_ips else "",
            "role": "primary",
        }}, sort_keys=True)

    @classmethod
    def parse(cls, value: str) -> PodNetwork:
        data = _load(POD_NETWORKS, value)
        try:
            d = data[DEFAULT_NETWORK]
            ips = d.get("ip_addresses") or [d["ip_address"]]
            gws = d.get("gateway_ips") or ([d["gateway_ip"]] if d.get("gateway_ip") else [])
            net = cls(
                ip_addresses=tuple(ipaddress.ip_interface(i) for i in ips),
                mac_address=str(d["mac_address"]).lower(),
                gateway_ips=tuple(ipaddress.ip_address(g) for g in gws),
                routes=tuple(Route(ipaddress.ip_network(r["dest"]),
                                   ipaddress.ip_address(r["nextHop"]))
                             for r in d.get("routes") or []),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise AnnotationError(POD_NETWORKS, value, f"bad or missing field {e}") from None
        parts = net.mac_address.split(":")
        if len(parts) != 6 or not all(len(p) == 2 for p in parts):
            raise AnnotationError(POD_NETWORKS, value, f"bad MAC {net.mac_address!r}")
        return net
