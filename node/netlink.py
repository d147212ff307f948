"""Kernel-side plumbing with pyroute2: veth pairs, addresses, routes, MTU, and
TX checksum offload, in the agent's own namespace or inside a pod's.

Entering a pod's network namespace is per thread (setns(2) with CLONE_NEWNET
affects only the calling thread): `in_netns` runs a function in a fresh thread
that enters the namespace and then ends, so no other thread ever runs in it.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import errno
import fcntl
import ipaddress
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ovnkube.annotations import IPAddress, IPInterface, IPNetwork

log = logging.getLogger(__name__)

IFF_NOARP = 0x80
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTPROT_KERNEL = 2  # the kind of route the kernel makes for an address's prefix
NUD_PERMANENT = 0x80

CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


class NetnsGone(Exception):
    """The pod's network namespace does not exist (any more)."""


class SetnsError(OSError):
    """setns(2) refused an opened file (e.g. not a namespace of that type);
    failing to open it raises the plain OSError instead."""


def setns(path: str, nstype: int, what: str = "") -> None:
    """Move the calling thread into the namespace pinned at `path` (setns(2);
    a mount namespace needs a single-threaded process). The one copy: the
    test bed (localcluster.netns) uses it too."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, nstype) != 0:
            err = ctypes.get_errno()
            raise SetnsError(err, f"setns into {what or repr(path)}: {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(path: str, fn: Callable[[], T]) -> T:
    """Run fn() inside the network namespace at `path` (in a throwaway thread)."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            setns(path, CLONE_NEWNET)
        except FileNotFoundError:
            box["err"] = NetnsGone(f"network namespace {path!r} does not exist")
            return
        except SetnsError as e:
            box["err"] = NetnsGone(f"{path!r} is not a network namespace: "
                                   f"{os.strerror(e.errno or 0)}")
            return
        except OSError as e:
            box["err"] = e
            return
        try:
            box["val"] = fn()
        except BaseException as e:
            box["err"] = e

    t = threading.Thread(target=body, name=f"netns:{os.path.basename(path)}")
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]
    return box["val"]


@contextlib.contextmanager
def ipr() -> Iterator[IPRoute]:
    h = IPRoute()
    try:
        yield h
    finally:
        h.close()


def tx_checksum_off(ifname: str) -> None:
    """`ethtool -K IFNAME tx off`, by ioctl, in the calling thread's namespace."""
    ecmd = array.array("I", [ETHTOOL_STXCSUM, 0])
    addr, _ = ecmd.buffer_info()
    ifr = struct.pack("16sP", ifname.encode(), addr)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifr)


def link_index(h: IPRoute, name: str) -> int | None:
    found = h.link_lookup(ifname=name)
    return int(found[0]) if found else None


def link_exists(name: str) -> bool:
    with ipr() as h:
        return link_index(h, name) is not None


@dataclass(frozen=True)
class LinkFacts:
    kind: str  # "veth", "bridge", "tun", ... ("" for a physical device)
    noarp: bool
    addresses: int  # how many addresses it carries


def link_facts(name: str) -> LinkFacts | None:
    """What a link in our namespace is, to tell a pod's host veth (a veth with
    NOARP and no address) from the node's own interfaces; None if absent."""
    with ipr() as h:
        idx = link_index(h, name)
        if idx is None:
            return None
        link = h.get_links(idx)[0]
        info = link.get_attr("IFLA_LINKINFO")
        kind = (info.get_attr("IFLA_INFO_KIND") if info is not None else None) or ""
        n_addr = len(h.get_addr(index=idx))
        return LinkFacts(kind=str(kind), noarp=bool(link["flags"] & IFF_NOARP),
                         addresses=n_addr)


def is_pod_veth(facts: LinkFacts) -> bool:
    """The shape create_pod_veth gives the host end of a pod's veth."""
    return facts.kind == "veth" and facts.noarp and not facts.addresses


NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3)


def netns_problem(path: str) -> str:
    """Why `path` cannot be a pod's network namespace ("" if it can): it must be
    a network namespace, and not the one this agent (the host) runs in."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return "does not exist"
    except OSError as e:
        return f"cannot be opened: {os.strerror(e.errno or 0)}"
    try:
        try:
            nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError:
            return "is not a namespace"
        if nstype != CLONE_NEWNET:
            return "is a namespace, but not a network namespace"
        st, own = os.fstat(fd), os.stat(f"/proc/{os.getpid()}/ns/net")
        if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
            return "is the node's own network namespace"
        return ""
    finally:
        os.close(fd)


def link_mac(h: IPRoute, index: int) -> str:
    return str(h.get_links(index)[0].get_attr("IFLA_ADDRESS"))


def delete_link(name: str) -> bool:
    """Delete a link in our namespace; False if it was not there."""
    with ipr() as h:
        idx = link_index(h, name)
        if idx is None:
            return False
        try:
            h.link("del", index=idx)
        except NetlinkError as e:
            if e.code != errno.ENODEV:
                raise
            return False
        return True


def wait_link(name: str, timeout: float) -> int:
    """Wait (polling, with a deadline) for a link to appear; its index."""
    deadline = time.monotonic() + timeout
    with ipr() as h:
        while True:
            idx = link_index(h, name)
            if idx is not None:
                return idx
            if time.monotonic() > deadline:
                raise TimeoutError(f"interface {name!r} did not appear within {timeout:.0f}s")
            time.sleep(0.02)


@dataclass(frozen=True)
class PodIfaceSpec:
    netns: str
    ifname: str
    mac: str
    addresses: tuple[IPInterface, ...]
    gateways: tuple[IPAddress, ...]
    routes: tuple[tuple[IPNetwork, IPAddress], ...]
    mtu: int
    tx_csum_off: bool


@dataclass(frozen=True)
class PodIface:
    host_ifname: str
    host_mac: str
    pod_mac: str
    pod_index: int


def _route_spec(dst: IPNetwork, gw: IPAddress | None, oif: int,
                src: IPAddress | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"dst": str(dst.network_address), "dst_len": dst.prefixlen,
                            "oif": oif, "family": socket.AF_INET if dst.version == 4
                            else socket.AF_INET6}
    if gw is not None:
        spec["gateway"] = str(gw)
    if src is not None:
        spec["prefsrc"] = str(src)
    return spec


def create_pod_veth(host_ifname: str, spec: PodIfaceSpec) -> PodIface:
    """Make the veth pair, move one end into the pod as spec.ifname, configure it.

    On any failure the pair is deleted again (deleting one end removes both).
    """
    tmp = "tmp" + host_ifname[-12:]
    with ipr() as h:
        stale = link_index(h, host_ifname)
        if stale is not None:
            log.info("deleting stale host interface %s", host_ifname)
            h.link("del", index=stale)
        h.link("add", ifname=host_ifname, kind="veth", mtu=spec.mtu,
               peer={"ifname": tmp, "mtu": spec.mtu})
        try:
            host_idx = link_index(h, host_ifname)
            peer_idx = link_index(h, tmp)
            assert host_idx is not None and peer_idx is not None
            h.link("set", index=peer_idx, address=spec.mac)
            if spec.tx_csum_off:
                tx_checksum_off(tmp)
            # The host end carries no address: it must not answer ARP either.
            # With the userspace datapath the kernel still sees the frames OVS
            # reads from it, and would answer the pod's ARP for the management
            # port's IP with this veth's MAC, taking the pod's replies to the
            # host out of OVN (a Service's un-DNAT never happens).
            h.link("set", index=host_idx, flags=IFF_NOARP, mask=IFF_NOARP)
            _disable_ipv6(host_ifname)
            h.link("set", index=host_idx, state="up")
            h.link("set", index=peer_idx, net_ns_fd=spec.netns)
            host_mac = link_mac(h, host_idx)
            pod_idx = in_netns(spec.netns, lambda: _configure_pod_side(tmp, spec))
        except BaseException:
            with contextlib.suppress(Exception):
                h.link("del", index=h.link_lookup(ifname=host_ifname)[0])
            raise
    return PodIface(host_ifname=host_ifname, host_mac=host_mac, pod_mac=spec.mac,
                    pod_index=pod_idx)


def _configure_pod_side(tmp: str, spec: PodIfaceSpec) -> int:
    with ipr() as h:
        if link_index(h, spec.ifname) is not None:
            raise FileExistsError(f"interface {spec.ifname!r} already exists in {spec.netns}")
        idx = link_index(h, tmp)
        assert idx is not None
        h.link("set", index=idx, ifname=spec.ifname)
        for a in spec.addresses:
            h.addr("add", index=idx, address=str(a.ip), prefixlen=a.network.prefixlen)
        h.link("set", index=idx, state="up")
        lo = link_index(h, "lo")
        if lo is not None:
            h.link("set", index=lo, state="up")
        for gw in spec.gateways:
            zero = ipaddress.ip_network("0.0.0.0/0" if gw.version == 4 else "::/0")
            h.route("add", **_route_spec(zero, gw, idx))
        for dst, nh in spec.routes:
            h.route("replace", **_route_spec(dst, nh, idx))
        return idx


def delete_pod_iface(netns: str, ifname: str) -> bool:
    """Delete the pod-side interface; False if namespace or interface is gone."""
    def body() -> bool:
        with ipr() as h:
            idx = link_index(h, ifname)
            if idx is None:
                return False
            h.link("del", index=idx)
            return True
    try:
        return in_netns(netns, body)
    except NetnsGone:
        return False


@dataclass(frozen=True)
class PodIfaceState:
    mac: str
    addresses: set[str]
    routes: set[tuple[str, str]]  # (dst CIDR, gateway)
    mtu: int


def read_pod_iface(netns: str, ifname: str) -> PodIfaceState | None:
    """What the pod side looks like now (for CHECK); None if the interface is gone."""
    def body() -> PodIfaceState | None:
        with ipr() as h:
            idx = link_index(h, ifname)
            if idx is None:
                return None
            link = h.get_links(idx)[0]
            addrs = {f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                     for a in h.get_addr(index=idx)}
            routes: set[tuple[str, str]] = set()
            for fam in (socket.AF_INET, socket.AF_INET6):
                for r in h.get_routes(family=fam, oif=idx):
                    gw = r.get_attr("RTA_GATEWAY")
                    if gw is None:
                        continue
                    dst = r.get_attr("RTA_DST") or ("0.0.0.0" if fam == socket.AF_INET
                                                     else "::")
                    routes.add((f"{dst}/{r['dst_len']}", str(gw)))
            return PodIfaceState(mac=str(link.get_attr("IFLA_ADDRESS")), addresses=addrs,
                                 routes=routes, mtu=int(link.get_attr("IFLA_MTU")))
    return in_netns(netns, body)


# --- host side: management port and gateway bridge -----------------------------

def configure_host_iface(name: str, mac: str | None, addresses: list[IPInterface],
                         mtu: int | None, routes: Sequence[tuple[IPNetwork, IPAddress | None]],
                         scope: int = RT_SCOPE_UNIVERSE,
                         sources: Mapping[IPNetwork, IPAddress] | None = None) -> None:
    """Idempotently give a host interface its MAC, addresses, MTU and routes
    (without a gateway: on-link, replacing the kernel's route of an address's
    prefix; `sources`: the preferred source address of some of those routes).
    Link-scoped addresses stay out of what read_uplink() takes for the node's
    own after a restart."""
    with ipr() as h:
        idx = link_index(h, name)
        if idx is None:
            raise FileNotFoundError(f"interface {name!r} does not exist")
        if mac and link_mac(h, idx).lower() != mac.lower():
            h.link("set", index=idx, address=mac)
        if mtu:
            h.link("set", index=idx, mtu=mtu)
        h.link("set", index=idx, state="up")
        have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in h.get_addr(index=idx)}
        for a in addresses:
            if (str(a.ip), a.network.prefixlen) not in have:
                h.addr("add", index=idx, address=str(a.ip), prefixlen=a.network.prefixlen,
                       scope=scope)
        for dst, gw in routes:
            spec = _route_spec(dst, gw, idx, (sources or {}).get(dst))
            if gw is None:
                spec.update(scope=RT_SCOPE_LINK, proto=RTPROT_KERNEL)
            h.route("replace", **spec)


@dataclass(frozen=True)
class UplinkInfo:
    mac: str
    addresses: list[IPInterface]
    default_gw: IPAddress | None
    mtu: int


def read_uplink(name: str) -> UplinkInfo:
    with ipr() as h:
        idx = link_index(h, name)
        if idx is None:
            raise FileNotFoundError(f"gateway interface {name!r} does not exist")
        link = h.get_links(idx)[0]
        addrs: list[IPInterface] = []
        for a in h.get_addr(index=idx):
            if a.get_attr("IFA_ADDRESS") is None or a["scope"] != 0:
                continue
            addrs.append(ipaddress.ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"))
        gw: IPAddress | None = None
        for r in h.get_routes(family=socket.AF_INET, oif=idx):
            if r["dst_len"] == 0 and r.get_attr("RTA_GATEWAY"):
                gw = ipaddress.ip_address(r.get_attr("RTA_GATEWAY"))
        return UplinkInfo(mac=str(link.get_attr("IFLA_ADDRESS")), addresses=addrs,
                          default_gw=gw, mtu=int(link.get_attr("IFLA_MTU")))


def move_addresses(src: str, dst: str, addresses: list[IPInterface],
                   default_gw: IPAddress | None) -> None:
    """Move addresses (and the default route) from the uplink to the bridge."""
    with ipr() as h:
        s, d = link_index(h, src), link_index(h, dst)
        if s is None or d is None:
            raise FileNotFoundError(f"interface {src if s is None else dst!r} does not exist")
        h.link("set", index=d, state="up")
        have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in h.get_addr(index=d)}
        for a in addresses:
            if (str(a.ip), a.network.prefixlen) not in have:
                h.addr("add", index=d, address=str(a.ip), prefixlen=a.network.prefixlen)
            with contextlib.suppress(NetlinkError):
                h.addr("del", index=s, address=str(a.ip), prefixlen=a.network.prefixlen)
        if default_gw is not None:
            h.route("replace", dst="0.0.0.0", dst_len=0, gateway=str(default_gw), oif=d)


def set_permanent_neighbour(name: str, ip: IPAddress, mac: str) -> None:
    with ipr() as h:
        idx = link_index(h, name)
        if idx is None:
            raise FileNotFoundError(f"interface {name!r} does not exist")
        h.neigh("replace", dst=str(ip), lladdr=mac, ifindex=idx, state=NUD_PERMANENT)


def _disable_ipv6(name: str) -> None:
    with contextlib.suppress(OSError):
        Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").write_text("1")


def isolate_uplink(name: str, bridge_mac: str) -> None:
    """Keep the kernel out of an uplink that OVS (userspace) now drives.

    A netdev-datapath port is read by OVS through a packet socket, but the
    kernel keeps handling the same frames: with the uplink still carrying the
    node's MAC it would answer for the node IP (now on br-ex) and reset
    connections it does not know, such as those of the gateway router. Give
    the uplink a MAC of its own (frames for the node's MAC are then "other
    host" to the kernel), stop it answering ARP and turn off its IPv6.
    """
    first = int(bridge_mac.split(":")[0], 16)
    own = ":".join([f"{(first | 0x02) ^ 0x20:02x}", *bridge_mac.split(":")[1:]])
    with ipr() as h:
        idx = link_index(h, name)
        if idx is None:
            raise FileNotFoundError(f"interface {name!r} does not exist")
        if link_mac(h, idx).lower() == bridge_mac.lower():
            h.link("set", index=idx, address=own)
        h.link("set", index=idx, flags=IFF_NOARP, mask=IFF_NOARP)
    _disable_ipv6(name)


def release_uplink(name: str, mac: str) -> None:
    """Undo isolate_uplink: the node's MAC, ARP and IPv6 back on the uplink."""
    with ipr() as h:
        idx = link_index(h, name)
        if idx is None:
            raise FileNotFoundError(f"interface {name!r} does not exist")
        h.link("set", index=idx, address=mac)
        h.link("set", index=idx, flags=0, mask=IFF_NOARP)
        h.link("set", index=idx, state="up")
    with contextlib.suppress(OSError):
        Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").write_text("0")


def add_addresses(name: str, addresses: Sequence[IPInterface],
                  default_gw: IPAddress | None) -> None:
    """Put addresses (and the default route through `default_gw`) on a link."""
    with ipr() as h:
        idx = link_index(h, name)
        if idx is None:
            raise FileNotFoundError(f"interface {name!r} does not exist")
        have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in h.get_addr(index=idx)}
        for a in addresses:
            if (str(a.ip), a.network.prefixlen) not in have:
                h.addr("add", index=idx, address=str(a.ip), prefixlen=a.network.prefixlen)
        if default_gw is not None:
            h.route("replace", dst="0.0.0.0", dst_len=0, gateway=str(default_gw), oif=idx)
