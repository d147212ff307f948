"""Configuration shared by master and node: flags, environment, validation.

Every value can come from a flag or from an environment variable (`OVNKUBE_`
plus the flag name in upper case with underscores). Bad values are rejected at
start with a message that names the flag and the value.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass, field

from ovnkube.annotations import IPNetwork


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ClusterSubnet:
    """A cluster CIDR and the prefix length each node gets from it."""

    cidr: IPNetwork
    host_prefix: int

    @classmethod
    def parse(cls, text: str) -> ClusterSubnet:
        """'10.244.0.0/16/24' or '10.244.0.0/16' (then /24 for IPv4, /64 for IPv6)."""
        parts = text.strip().split("/")
        try:
            if len(parts) == 3:
                cidr = ipaddress.ip_network(f"{parts[0]}/{parts[1]}", strict=True)
                host_prefix = int(parts[2])
            elif len(parts) == 2:
                cidr = ipaddress.ip_network(text.strip(), strict=True)
                host_prefix = 24 if cidr.version == 4 else 64
            else:
                raise ValueError("want CIDR or CIDR/hostPrefix")
        except ValueError as e:
            raise ConfigError(f"--cluster-subnets {text!r}: {e}") from None
        if not cidr.prefixlen <= host_prefix <= cidr.max_prefixlen - 2:
            raise ConfigError(
                f"--cluster-subnets {text!r}: host prefix /{host_prefix} must be between "
                f"/{cidr.prefixlen} and /{cidr.max_prefixlen - 2}")
        return cls(cidr, host_prefix)

    def __str__(self) -> str:
        return f"{self.cidr}/{self.host_prefix}"


def parse_cidr(flag: str, text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as e:
        raise ConfigError(f"{flag} {text!r}: {e}") from None


def check_remote(flag: str, text: str) -> str:
    """OVSDB remotes: unix:PATH, tcp:IP:PORT, ssl:IP:PORT, comma-separated."""
    for r in text.split(","):
        kind, _, rest = r.strip().partition(":")
        if kind == "unix" and rest:
            continue
        if kind in ("tcp", "ssl"):
            host, _, port = rest.rpartition(":")
            try:
                ipaddress.ip_address(host.strip("[]"))
                if 0 < int(port) < 65536:
                    continue
            except ValueError:
                pass
        raise ConfigError(f"{flag} {text!r}: {r.strip()!r} is not unix:PATH, tcp:IP:PORT "
                          "or ssl:IP:PORT")
    return text


#: Source ports the gateway routers SNAT pod traffic to: above the host's
#: ephemeral range (32768-60999), so a node's br-ex can tell OVN's replies
#: from the host's by destination port alone.
GR_SNAT_PORTS = (61000, 65535)
NODE_PORTS = (30000, 32767)

#: Link-local /29 between a node's host and its gateway router, as
#: ovn-kubernetes' masquerade subnet: the host reaches its own NodePorts by
#: DNAT to the router's address, SNATed to its own (the router drops packets
#: that claim to come from its own node IP).
MASQUERADE_SUBNET = ipaddress.IPv4Network("169.254.169.0/29")
GR_MASQUERADE_IP = MASQUERADE_SUBNET.network_address + 1
HOST_MASQUERADE_IP = MASQUERADE_SUBNET.network_address + 2
#: The source a pod sees when it reaches itself through a Service (the LBs'
#: hairpin_snat_ip), so NetworkPolicy can allow hairpin traffic by address.
HAIRPIN_MASQUERADE_IP = MASQUERADE_SUBNET.network_address + 5

DEFAULT_CLUSTER_SUBNET = ClusterSubnet.parse("10.244.0.0/16/24")
DEFAULT_SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/16")
DEFAULT_JOIN_SUBNET = ipaddress.ip_network("100.64.0.0/16")


@dataclass(frozen=True)
class Config:
    cluster_subnets: tuple[ClusterSubnet, ...] = (DEFAULT_CLUSTER_SUBNET,)
    service_cidrs: tuple[IPNetwork, ...] = (DEFAULT_SERVICE_CIDR,)
    join_subnet: IPNetwork = DEFAULT_JOIN_SUBNET
    mtu: int = 1400
    nb_address: str = ""
    sb_address: str = ""
    nb_ssl: tuple[str, str, str] | None = None  # key, cert, CA
    kubeconfig: str = ""
    node_name: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def validate(self) -> Config:
        if not 576 <= self.mtu <= 9000:
            raise ConfigError(f"--mtu {self.mtu}: must be between 576 and 9000")
        nets = [s.cidr for s in self.cluster_subnets] + list(self.service_cidrs) + [
            self.join_subnet]
        for i, a in enumerate(nets):
            for b in nets[i + 1:]:
                if a.version == b.version and a.overlaps(b):
                    raise ConfigError(f"subnets {a} and {b} overlap; cluster, service and "
                                      "join subnets must be distinct")
        return self


def env_default(name: str, default: str) -> str:
    """A flag's default from the environment: OVNKUBE_ + the flag name in upper
    case with underscores (shared by master and node flags)."""
    return os.environ.get("OVNKUBE_" + name.upper().replace("-", "_"), default)


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster-subnets", default=env_default("cluster-subnets", "10.244.0.0/16/24"),
                   help="comma-separated CIDR[/hostPrefix] (default 10.244.0.0/16/24)")
    p.add_argument("--k8s-service-cidr", default=env_default("k8s-service-cidr", "10.96.0.0/16"))
    p.add_argument("--join-subnet", default=env_default("join-subnet", "100.64.0.0/16"))
    p.add_argument("--mtu", default=env_default("mtu", "1400"))
    p.add_argument("--nb-address", default=env_default("nb-address", ""),
                   help="OVN NB remote(s): unix:PATH, tcp:IP:PORT, ssl:IP:PORT")
    p.add_argument("--sb-address", default=env_default("sb-address", ""))
    p.add_argument("--nb-client-privkey", default=env_default("nb-client-privkey", ""))
    p.add_argument("--nb-client-cert", default=env_default("nb-client-cert", ""))
    p.add_argument("--nb-client-cacert", default=env_default("nb-client-cacert", ""))
    p.add_argument("--k8s-kubeconfig", default=env_default("k8s-kubeconfig", ""),
                   help="kubeconfig path; empty: in-cluster config")
    p.add_argument("--node-name", default=env_default("node-name", os.environ.get("NODE_NAME", "")))
    p.add_argument("-v", "--loglevel", default=env_default("loglevel", "info"))


def from_args(a: argparse.Namespace) -> Config:
    try:
        mtu = int(a.mtu)
    except ValueError:
        raise ConfigError(f"--mtu {a.mtu!r}: not a number") from None
    ssl_parts = (a.nb_client_privkey, a.nb_client_cert, a.nb_client_cacert)
    if any(ssl_parts) and not all(ssl_parts):
        raise ConfigError("--nb-client-privkey, --nb-client-cert and --nb-client-cacert "
                          "go together")
    for path in filter(None, ssl_parts):
        if not os.path.exists(path):
            raise ConfigError(f"SSL file {path!r} does not exist")
    return Config(
        cluster_subnets=tuple(ClusterSubnet.parse(s) for s in a.cluster_subnets.split(",")
                              if s.strip()),
        service_cidrs=tuple(parse_cidr("--k8s-service-cidr", s)
                            for s in a.k8s_service_cidr.split(",") if s.strip()),
        join_subnet=parse_cidr("--join-subnet", a.join_subnet),
        mtu=mtu,
        nb_address=check_remote("--nb-address", a.nb_address) if a.nb_address else "",
        sb_address=check_remote("--sb-address", a.sb_address) if a.sb_address else "",
        nb_ssl=ssl_parts if all(ssl_parts) else None,
        kubeconfig=a.k8s_kubeconfig,
        node_name=a.node_name,
    ).validate()
