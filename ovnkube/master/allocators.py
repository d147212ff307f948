"""IP address management: node subnets out of the cluster CIDRs, join-switch
addresses per gateway router, and pod IPs out of each node subnet (one pool
per node, `NodePools`).

All allocators are rebuilt from what the API already records (annotations)
before they hand out anything new, so no address is ever given twice across
master restarts.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable

from ovnkube import names
from ovnkube.annotations import IPAddress, IPNetwork
from ovnkube.config import ClusterSubnet


class AllocationError(RuntimeError):
    """Nothing left to allocate, or a conflicting claim."""


class SubnetAllocator:
    """Hands each node a /hostPrefix out of the cluster subnets (lowest free first)."""

    def __init__(self, cluster_subnets: Iterable[ClusterSubnet]) -> None:
        self.pools = list(cluster_subnets)
        self._by_owner: dict[str, IPNetwork] = {}
        self._used: dict[IPNetwork, str] = {}
        self._lock = threading.Lock()

    def _in_pool(self, net: IPNetwork) -> bool:
        return any(net.version == p.cidr.version and net.subnet_of(p.cidr)  # type: ignore[arg-type]
                   and net.prefixlen == p.host_prefix for p in self.pools)

    def mark(self, owner: str, net: IPNetwork) -> None:
        """Record an existing allocation (from an annotation)."""
        with self._lock:
            if not self._in_pool(net):
                raise AllocationError(f"subnet {net} of {owner} is not a "
                                      f"/{self.pools[0].host_prefix} of the cluster subnets")
            holder = self._used.get(net)
            if holder is not None and holder != owner:
                raise AllocationError(f"subnet {net} of {owner} is already used by {holder}")
            self._by_owner[owner] = net
            self._used[net] = owner

    def get(self, owner: str) -> IPNetwork | None:
        with self._lock:
            return self._by_owner.get(owner)

    def allocate(self, owner: str) -> IPNetwork:
        with self._lock:
            if owner in self._by_owner:
                return self._by_owner[owner]
            for pool in self.pools:
                for net in pool.cidr.subnets(new_prefix=pool.host_prefix):
                    if net not in self._used:
                        self._by_owner[owner] = net
                        self._used[net] = owner
                        return net
        raise AllocationError(
            f"no free /{self.pools[0].host_prefix} left in cluster subnets "
            f"{', '.join(str(p.cidr) for p in self.pools)} for {owner}")

    def release(self, owner: str) -> None:
        with self._lock:
            net = self._by_owner.pop(owner, None)
            if net is not None:
                self._used.pop(net, None)


class IPPool:
    """Addresses of one subnet, with some reserved (network, gateway, ...)."""

    def __init__(self, subnet: IPNetwork, reserved: Iterable[IPAddress] = ()) -> None:
        self.subnet = subnet
        self.reserved = {subnet.network_address, *reserved}
        if subnet.version == 4 and subnet.prefixlen < 31:
            self.reserved.add(subnet.broadcast_address)
        self._by_owner: dict[str, IPAddress] = {}
        self._used: dict[IPAddress, str] = {}
        self._next = int(subnet.network_address)
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self.subnet.num_addresses - len(self.reserved)

    def free(self) -> int:
        with self._lock:
            return self.size - len(self._used)

    def mark(self, owner: str, ip: IPAddress) -> None:
        with self._lock:
            if ip not in self.subnet or ip in self.reserved:
                raise AllocationError(f"{ip} of {owner} is not an assignable address of "
                                      f"{self.subnet}")
            holder = self._used.get(ip)
            if holder is not None and holder != owner:
                raise AllocationError(f"{ip} of {owner} is already used by {holder}")
            old = self._by_owner.get(owner)
            if old is not None and old != ip:
                self._used.pop(old, None)
            self._by_owner[owner] = ip
            self._used[ip] = owner

    def get(self, owner: str) -> IPAddress | None:
        with self._lock:
            return self._by_owner.get(owner)

    def allocate(self, owner: str) -> IPAddress:
        with self._lock:
            if owner in self._by_owner:
                return self._by_owner[owner]
            first = int(self.subnet.network_address)
            n = self.subnet.num_addresses
            # Round-robin from the last allocation, so a freed address is not
            # handed out again at once (stale ARP/conntrack of the old pod).
            for i in range(n):
                cand = ipaddress.ip_address(first + (self._next - first + 1 + i) % n)
                if cand not in self.reserved and cand not in self._used:
                    self._next = int(cand)
                    self._by_owner[owner] = cand
                    self._used[cand] = owner
                    return cand
        raise AllocationError(f"subnet {self.subnet} has no free address left for {owner}")

    def release(self, owner: str) -> IPAddress | None:
        with self._lock:
            ip = self._by_owner.pop(owner, None)
            if ip is not None:
                self._used.pop(ip, None)
            return ip

    def owners(self) -> dict[str, IPAddress]:
        with self._lock:
            return dict(self._by_owner)


def pod_pool(subnet: IPNetwork) -> IPPool:
    return IPPool(subnet, [names.node_gateway_ip(subnet), names.node_mgmt_ip(subnet)])


def join_pool(join_subnet: IPNetwork) -> IPPool:
    """Join-switch addresses, less the cluster router's."""
    return IPPool(join_subnet, [names.join_router_ip(join_subnet)])


class NodePools:
    """The pod address pool of each node that has a subnet."""

    def __init__(self) -> None:
        self._pools: dict[str, IPPool] = {}
        self._lock = threading.Lock()

    def add(self, node: str, subnet: IPNetwork) -> IPPool:
        """The node's pool for `subnet`: kept if it has that subnet, else new."""
        with self._lock:
            pool = self._pools.get(node)
            if pool is None or pool.subnet != subnet:
                pool = pod_pool(subnet)
                self._pools[node] = pool
            return pool

    def get(self, node: str) -> IPPool | None:
        with self._lock:
            return self._pools.get(node)

    def drop(self, node: str) -> None:
        with self._lock:
            self._pools.pop(node, None)

    def release(self, owner: str) -> list[str]:
        """Free `owner`'s address in every pool; the nodes whose pool had one."""
        with self._lock:
            pools = list(self._pools.items())
        return [node for node, pool in pools if pool.release(owner) is not None]
