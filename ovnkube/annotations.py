"""The annotations master and node exchange through the Kubernetes API, in the
formats ovn-kubernetes uses, with parsers that name the bad value."""

from __future__ import annotations

import ipaddress
import json
import re
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


# How much of a bad value an error message quotes (a value can be 256 KiB).
_QUOTE_LIMIT = 200
# The MAC addresses we accept: six hex octets, colon-separated.
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
# A chassis name (OVS system-id): what ovn-kubernetes and ovs-ctl write, a UUID or
# a host name; no spaces, quotes or control characters.
_CHASSIS_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


def _quote(value: object) -> str:
    text = repr(value)
    if len(text) <= _QUOTE_LIMIT:
        return text
    return f"{text[:_QUOTE_LIMIT]}... ({len(text)} characters)"


class AnnotationError(ValueError):
    """An annotation is missing or malformed; the message names key and value."""

    def __init__(self, key: str, value: object, why: str) -> None:
        super().__init__(f"annotation {key}={_quote(value)}: {why}")
        self.key = key
        self.value = value


def _load(key: str, value: str) -> Any:
    if not isinstance(value, str):
        raise AnnotationError(key, value, f"not a string but {type(value).__name__}")
    try:
        return json.loads(value)
    except (TypeError, ValueError, RecursionError) as e:
        raise AnnotationError(key, value, f"not JSON ({e})") from None


class _Bad(ValueError):
    """A field of an annotation is wrong; the parser adds key and value."""


def _str(what: str, x: object) -> str:
    if not isinstance(x, str):
        raise _Bad(f"{what} {_quote(x)} is not a string")
    return x


def _obj(what: str, x: object) -> dict[str, Any]:
    if not isinstance(x, dict):
        raise _Bad(f"{what} {_quote(x)} is not an object")
    return x


def _list(what: str, x: object) -> list[Any]:
    if not isinstance(x, list):
        raise _Bad(f"{what} {_quote(x)} is not a list")
    return x


def _ip_interface(what: str, x: object) -> IPInterface:
    try:
        return ipaddress.ip_interface(_str(what, x))
    except ValueError as e:
        raise _Bad(f"{what}: {e}") from None


def _ip_address(what: str, x: object) -> IPAddress:
    try:
        return ipaddress.ip_address(_str(what, x))
    except ValueError as e:
        raise _Bad(f"{what}: {e}") from None


def _ip_network(what: str, x: object, strict: bool = False) -> IPNetwork:
    try:
        return ipaddress.ip_network(_str(what, x), strict=strict)
    except ValueError as e:
        raise _Bad(f"{what}: {e}") from None


def _mac(what: str, x: object) -> str:
    mac = _str(what, x)
    if not _MAC.fullmatch(mac):
        raise _Bad(f"bad MAC {mac!r} ({what}: want six hex octets, aa:bb:cc:dd:ee:ff)")
    return mac.lower()


def _field(d: dict[str, Any], key: str) -> Any:
    if key not in d:
        raise _Bad(f"field {key!r} is missing")
    return d[key]


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
        addr = _ip_interface("ipv4", _field(_obj("value", data), "ipv4"))
        if addr.version != 4:
            raise _Bad(f"ipv4 {str(addr)!r} is not an IPv4 address")
        return addr
    except _Bad as e:
        raise AnnotationError(NODE_GR_LRP_IFADDR, value,
                              f'{e}; want {{"ipv4": "<ip>/<len>"}}') from None


def parse_node_subnets(value: str) -> list[IPNetwork]:
    data = _load(NODE_SUBNETS, value)
    if not isinstance(data, dict) or DEFAULT_NETWORK not in data:
        raise AnnotationError(NODE_SUBNETS, value, 'want {"default": "<cidr>"}')
    raw = data[DEFAULT_NETWORK]
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise AnnotationError(NODE_SUBNETS, value, "no subnet in the list")
    try:
        nets = [_ip_network("subnet", s, strict=True) for s in items]
    except _Bad as e:
        raise AnnotationError(NODE_SUBNETS, value, f"bad subnet ({e})") from None
    for sn in nets:
        # A node subnet holds the router port (.1), the management port (.2)
        # and pods: at least a /30 (IPv4) or /126 (IPv6).
        if sn.max_prefixlen - sn.prefixlen < 2:
            raise AnnotationError(NODE_SUBNETS, value, f"subnet {sn} is too small for a node")
    return nets


def parse_node_chassis_id(value: str) -> str:
    """The node's OVN chassis name (its OVS system-id), as the agent reports it."""
    if not isinstance(value, str) or not _CHASSIS_ID.fullmatch(value):
        raise AnnotationError(NODE_CHASSIS_ID, value, "not a chassis name (1-253 letters, "
                              "digits, '.', '_', '-', starting with a letter or digit)")
    return value


def parse_node_mgmt_port_mac(value: str) -> str:
    try:
        return _mac("value", value)
    except _Bad as e:
        raise AnnotationError(NODE_MGMT_PORT_MAC, value, str(e)) from None


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
            d = _obj(DEFAULT_NETWORK, _field(_obj("value", data), DEFAULT_NETWORK))
            ips = d.get("ip-addresses") or ([d["ip-address"]] if d.get("ip-address") else [])
            hops = d.get("next-hops") or ([d["next-hop"]] if d.get("next-hop") else [])
            mode = _str("mode", _field(d, "mode"))
            if mode not in ("shared", "local"):
                raise _Bad(f"mode {mode!r} is not 'shared' or 'local'")
            interface_id = _str("interface-id", _field(d, "interface-id"))
            bridge_id = _str("bridge-id", d.get("bridge-id", "br-ex"))
            for what, name in (("interface-id", interface_id), ("bridge-id", bridge_id)):
                if not _CHASSIS_ID.fullmatch(name):
                    raise _Bad(f"{what} {name!r} is not a valid OVS name")
            npe = d.get("node-port-enable", "true")
            if npe not in ("true", "false", True, False):
                raise _Bad(f"node-port-enable {_quote(npe)} is not 'true' or 'false'")
            vlan = d.get("vlan-id", "0") or "0"
            if isinstance(vlan, bool) or not isinstance(vlan, str | int) \
                    or not str(vlan).isdigit() or not 0 <= int(vlan) <= 4094:
                raise _Bad(f"vlan-id {_quote(vlan)} is not a VLAN id (0-4094)")
            return cls(
                mode=mode, interface_id=interface_id,
                mac_address=_mac("mac-address", _field(d, "mac-address")),
                ip_addresses=tuple(_ip_interface("ip-addresses", i)
                                   for i in _list("ip-addresses", ips)),
                next_hops=tuple(_ip_address("next-hops", h) for h in _list("next-hops", hops)),
                bridge_id=bridge_id, node_port_enable=npe in ("true", True),
                vlan_id=int(vlan),
            )
        except _Bad as e:
            raise AnnotationError(L3_GATEWAY_CONFIG, value, str(e)) from None


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
            d = _obj(DEFAULT_NETWORK, _field(_obj("value", data), DEFAULT_NETWORK))
            ips = d.get("ip_addresses") or [_field(d, "ip_address")]
            gws = d.get("gateway_ips") or ([d["gateway_ip"]] if d.get("gateway_ip") else [])
            addresses = tuple(_ip_interface("ip_addresses", i)
                              for i in _list("ip_addresses", ips))
            gateways = tuple(_ip_address("gateway_ips", g) for g in _list("gateway_ips", gws))
            routes = tuple(
                Route(_ip_network("routes dest", _field(_obj("route", r), "dest")),
                      _ip_address("routes nextHop", _field(r, "nextHop")))
                for r in _list("routes", d.get("routes") or []))
            return cls(ip_addresses=addresses,
                       mac_address=_mac("mac_address", _field(d, "mac_address")),
                       gateway_ips=gateways, routes=routes)
        except _Bad as e:
            raise AnnotationError(POD_NETWORKS, value, str(e)) from None
